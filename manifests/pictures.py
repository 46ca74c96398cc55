"""Pictures of samples and of the detector's choice, for ``copa inspect`` and the evaluation job.

Inputs are plain numpy/Python as stored in a shard (DESIGN 4): the image (uint8 RGB array, JPEG bytes or a PIL
image), ``boxes`` normalized ``x0, y0, x1, y1`` in [0, 1] of the stored image, per-caption patch coverage grids
(``<key>.pta.npy``), the matched words of ``relevant``, and for the detector its per-patch scores and the row-major
indices of the patches it kept (patch index = row * G + col). Every function returns a ``PIL.Image.Image``.

Patch overlays resize the whole image to a ``side`` x ``side`` square, the canonical geometry the labels are
computed for (DESIGN 5), so each grid cell sits exactly on its patch. Drawing is Pillow plus numpy, pixel-exact: a
cell of value 0 keeps the image's pixels, a cell of value v is blended towards the tint with weight ``alpha * v``.
Grid values are uint8 0..255 (as stored) or any other dtype in [0, 1]. The detector panel (the paper's Figure 4)
shows the scores min-max scaled over the image: top-K depends only on their order, and logits and
probabilities then look the same.

Shapes: H, W image height and width; M boxes; C captions; G patch grid side (16 for 256 px with 16 px patches).
"""

from __future__ import annotations

import functools
import io
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

ImageLike = np.ndarray | bytes | Image.Image
RGB = tuple[int, int, int]

BOX_COLOR: RGB = (255, 48, 48)
COVER_COLOR: RGB = (0, 150, 255)
SCORE_COLOR: RGB = (255, 140, 0)
HIGHLIGHT: RGB = (255, 222, 80)
RIGHT_COLOR: RGB = (40, 170, 60)
WHITE: RGB = (255, 255, 255)
BLACK: RGB = (0, 0, 0)
GAP = 4  # pixels between tiles
MAX_BOXES = 12  # boxes drawn on a sample's image (a VG image has hundreds); a note counts the others


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled font: no font files to ship


def _line_height(font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> int:
    return int(font.getbbox("Ag|")[3]) + 3


def to_image(image: ImageLike) -> Image.Image:
    """An RGB PIL image from a uint8 ``[H, W, 3]`` array, encoded image bytes or a PIL image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (bytes, bytearray, memoryview)):
        try:
            with Image.open(io.BytesIO(image)) as decoded:
                return decoded.convert("RGB")
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"image bytes do not decode: {err}") from err
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image must be a uint8 [H, W, 3] array, got {array.dtype} {array.shape}")
    return Image.fromarray(array, "RGB")


def _square(values: np.ndarray | Sequence, name: str, grid: int | None = None) -> np.ndarray:
    """``values`` as a ``[G, G]`` array: square already, or flat ``[G*G]`` in row-major patch order."""
    array = np.asarray(values)
    side = math.isqrt(array.size)
    if array.ndim == 1 and side * side == array.size:
        array = array.reshape(side, side)
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.size == 0:
        raise ValueError(f"{name} must be a square grid [G, G] or [G*G], got shape {array.shape}")
    if grid is not None and array.shape[0] != grid:
        raise ValueError(f"{name} has grid {array.shape[0]} but grid is {grid}")
    return array


def _grid_values(values: np.ndarray | Sequence, name: str, grid: int | None = None) -> np.ndarray:
    """float64 ``[G, G]`` in [0, 1] from a uint8 grid (0..255) or one already in [0, 1]."""
    array = _square(values, name, grid)
    if array.dtype == np.uint8:
        return array / 255.0
    array = array.astype(np.float64)
    if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
        raise ValueError(f"{name} must be uint8 0..255 or in [0, 1], got range [{array.min()}, {array.max()}]")
    return array


def _cells(image: ImageLike, side: int, grid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The image as float ``[side, side, 3]``, each pixel row's and column's cell index, and the grid-line mask."""
    if side < grid:
        raise ValueError(f"side must be at least the grid ({grid}), got {side}")
    picture = to_image(image)
    if picture.size != (side, side):
        picture = picture.resize((side, side), Image.Resampling.BILINEAR)
    cell = np.arange(side) * grid // side
    border = np.r_[False, cell[1:] != cell[:-1]]  # first pixel of every cell but the first: 1 px lines
    return np.asarray(picture, dtype=np.float64), cell, border[:, None] | border[None, :]


def _finish(pixels: np.ndarray, lines: np.ndarray | None) -> Image.Image:
    if lines is not None:
        pixels[lines] = 0.6 * pixels[lines] + 0.4 * np.asarray(WHITE)
    return Image.fromarray(np.rint(pixels).clip(0, 255).astype(np.uint8), "RGB")


def coverage_overlay(
    image: ImageLike,
    grid_values: np.ndarray | Sequence,
    color: RGB = COVER_COLOR,
    alpha: float = 0.6,
    side: int = 256,
    grid_lines: bool = True,
) -> Image.Image:
    """The image resized to ``side`` x ``side``, each patch cell tinted towards ``color`` by ``alpha * value``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    values_GG = _grid_values(grid_values, "grid_values")
    pixels, cell, lines = _cells(image, side, len(values_GG))
    weight = alpha * values_GG[cell[:, None], cell[None, :]][:, :, None]
    pixels = (1.0 - weight) * pixels + weight * np.asarray(color, dtype=np.float64)
    return _finish(pixels, lines if grid_lines else None)


def kept_overlay(
    image: ImageLike,
    kept: np.ndarray | Sequence[int],
    grid: int,
    side: int = 256,
    dim: float = 0.3,
    grid_lines: bool = True,
) -> Image.Image:
    """The image resized to ``side`` x ``side`` with dropped patches grey at ``dim`` brightness, kept ones as is."""
    if grid <= 0:
        raise ValueError(f"grid must be positive, got {grid}")
    if not 0.0 <= dim <= 1.0:
        raise ValueError(f"dim must be in [0, 1], got {dim}")
    kept_K = np.asarray(kept).ravel()
    if kept_K.size and not np.issubdtype(kept_K.dtype, np.integer):
        raise ValueError(f"kept must be integer patch indices, got dtype {kept_K.dtype}")
    if kept_K.size and (kept_K.min() < 0 or kept_K.max() >= grid * grid):
        raise ValueError(f"kept indices must be in [0, {grid * grid}), got range [{kept_K.min()}, {kept_K.max()}]")
    is_kept = np.zeros(grid * grid, dtype=bool)
    is_kept[kept_K.astype(np.int64)] = True
    pixels, cell, lines = _cells(image, side, grid)
    dropped = ~is_kept.reshape(grid, grid)[cell[:, None], cell[None, :]]
    grey = pixels[dropped] @ np.array([0.299, 0.587, 0.114])
    pixels[dropped] = dim * grey[:, None]
    return _finish(pixels, lines if grid_lines else None)


def _boxes_array(boxes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    boxes_M4 = np.asarray(boxes, dtype=np.float64)
    boxes_M4 = boxes_M4.reshape(0, 4) if boxes_M4.size == 0 else boxes_M4
    if boxes_M4.ndim != 2 or boxes_M4.shape[1] != 4:
        raise ValueError(f"boxes must be [M, 4], got shape {boxes_M4.shape}")
    return boxes_M4


def draw_boxes(
    image: ImageLike,
    boxes: np.ndarray | Sequence[Sequence[float]],
    labels: Sequence[str] | None = None,
    color: RGB = BOX_COLOR,
    width: int = 2,
    font_size: int = 10,
) -> Image.Image:
    """Outlines of normalized ``[M, 4]`` boxes on the image at its own size, each with its label in a corner.

    Boxes outside [0, 1] are an error rather than clipped: they are almost always pixel coordinates passed by mistake.
    """
    picture = to_image(image).copy()
    boxes_M4 = _boxes_array(boxes)
    if not np.isfinite(boxes_M4).all() or boxes_M4.min(initial=0) < -1e-6 or boxes_M4.max(initial=0) > 1 + 1e-6:
        raise ValueError("boxes must be normalized x0, y0, x1, y1 in [0, 1]")
    boxes_M4 = boxes_M4.clip(0.0, 1.0)  # float noise only, after the check above
    if (boxes_M4[:, 2] < boxes_M4[:, 0]).any() or (boxes_M4[:, 3] < boxes_M4[:, 1]).any():
        raise ValueError("boxes must have x0 <= x1 and y0 <= y1")
    if labels is not None and len(labels) != len(boxes_M4):
        raise ValueError(f"labels has {len(labels)} entries for {len(boxes_M4)} boxes")
    draw, font = ImageDraw.Draw(picture), _font(font_size)
    scale = np.array([picture.width, picture.height] * 2)
    for m, (x0, y0, x1, y1) in enumerate(np.rint(boxes_M4 * scale).astype(int)):
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=color, width=width)
        if labels is not None and labels[m]:
            corner = (x0 + width, y0 + width)
            right, bottom = draw.textbbox(corner, labels[m], font=font)[2:]
            draw.rectangle([x0, y0, right + 1, bottom + 1], fill=color)
            draw.text(corner, labels[m], fill=WHITE, font=font)
    return picture


def _spans(text: str, words: Sequence[str]) -> list[tuple[int, int]]:
    """Character spans of ``words`` in ``text``: case-insensitive, on word boundaries, as the aligner matches."""
    spans = []
    for word in words:
        body = r"\s+".join(re.escape(part) for part in word.split())
        if body:
            pattern = re.compile(rf"(?<![\w'-]){body}(?![\w'-])", re.IGNORECASE)
            spans += [m.span() for m in pattern.finditer(text)]
    return spans


def caption_strip(
    caption: str,
    words: Sequence[str] = (),
    width: int = 256,
    font_size: int = 12,
    highlight: RGB = HIGHLIGHT,
) -> Image.Image:
    """The caption in black on white, wrapped to ``width`` pixels, with the matched ``words`` on ``highlight``.

    A single word wider than the strip gets a line of its own and is cut at the edge.
    """
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    text = re.sub(r"\s", " ", caption)  # one character for one, so offsets stay valid
    font, pad = _font(font_size), 3
    lines: list[tuple[int, int]] = []  # character ranges of text, one per line
    for m in re.finditer(r"\S+", text):
        if lines and font.getlength(text[lines[-1][0] : m.end()]) <= width - 2 * pad:
            lines[-1] = (lines[-1][0], m.end())
        else:
            lines.append(m.span())
    lines = lines or [(0, 0)]
    line_h = _line_height(font)
    strip = Image.new("RGB", (width, len(lines) * line_h + 2 * pad), WHITE)
    draw = ImageDraw.Draw(strip)
    spans = _spans(text, words)
    for i, (start, end) in enumerate(lines):
        y = pad + i * line_h
        for lo, hi in spans:
            a, b = max(lo, start), min(hi, end)
            if a < b:
                x0, x1 = (pad + font.getlength(text[start:k]) for k in (a, b))
                draw.rectangle([x0 - 1, y, x1, y + line_h - 2], fill=highlight)
        draw.text((pad, y + 1), text[start:end], fill=BLACK, font=font)
    return strip


def _stack(images: Sequence[Image.Image], horizontal: bool, gap: int = GAP) -> Image.Image:
    """Images side by side (top-aligned) or one under the other (left-aligned) on white."""
    along = [im.width if horizontal else im.height for im in images]
    across = max(im.height if horizontal else im.width for im in images)
    length = sum(along) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (length, across) if horizontal else (across, length), WHITE)
    offset = 0
    for im, size in zip(images, along, strict=True):
        canvas.paste(im, (offset, 0) if horizontal else (0, offset))
        offset += size + gap
    return canvas


def _titled(image: Image.Image, title: str, font_size: int = 11) -> Image.Image:
    font = _font(font_size)
    head = Image.new("RGB", (image.width, _line_height(font)), WHITE)
    ImageDraw.Draw(head).text((2, 1), title, fill=BLACK, font=font)
    return _stack([head, image], horizontal=False, gap=0)


def sample_panel(
    image: ImageLike,
    boxes: np.ndarray | Sequence[Sequence[float]],
    box_labels: Sequence[str],
    captions: Sequence[str],
    relevant: Sequence[dict] | None = None,
    coverage: np.ndarray | None = None,
    max_captions: int = 3,
    side: int = 256,
) -> Image.Image:
    """One sample in a row: the image with its boxes, then per caption its coverage overlay above its caption strip.

    The image shows the boxes linked to the shown captions (all boxes when ``relevant`` is None), at most
    ``MAX_BOXES`` (the largest), and a note "K of M boxes" when some are left out: a Visual Genome image has hundreds,
    which drawn together would cover the picture in labels.

    ``relevant`` is the shard json's per-caption ``{"boxes", "words"}``; ``coverage`` the uint8 ``[C, G, G]`` of
    ``<key>.pta.npy``. Without coverage (a sample without boxes) the caption strips stack under the image instead.
    The boxed image keeps its aspect ratio inside a ``side`` x ``side`` tile; the overlays use the canonical square.
    """
    if max_captions <= 0:
        raise ValueError(f"max_captions must be positive, got {max_captions}")
    if relevant is not None and len(relevant) != len(captions):
        raise ValueError(f"relevant has {len(relevant)} entries for {len(captions)} captions")
    picture = to_image(image)
    scale = side / max(picture.size)
    fitted = picture.resize((max(1, round(picture.width * scale)), max(1, round(picture.height * scale))))
    shown = range(min(len(captions), max_captions))
    boxes_M4 = _boxes_array(boxes)
    if len(box_labels) != len(boxes_M4):
        raise ValueError(f"box_labels has {len(box_labels)} entries for {len(boxes_M4)} boxes")
    drawn = _boxes_to_draw(boxes_M4, [relevant[c]["boxes"] for c in shown] if relevant is not None else None)
    tile = Image.new("RGB", (side, side), WHITE)
    tile.paste(draw_boxes(fitted, boxes_M4[drawn], [box_labels[m] for m in drawn]), (0, 0))
    if len(drawn) < len(boxes_M4):
        whose = "the shown captions'" if relevant is not None else "the largest"
        _note(tile, f"{len(drawn)} of {len(boxes_M4)} boxes ({whose})")
    words = [list(relevant[c]["words"]) if relevant is not None else [] for c in shown]
    strips = [caption_strip(captions[c], words[c], width=side) for c in shown]
    if coverage is None:
        return _stack([tile, *strips], horizontal=False)
    coverage_CGG = np.asarray(coverage)
    if coverage_CGG.ndim != 3 or coverage_CGG.shape[0] != len(captions):
        raise ValueError(f"coverage must be [C, G, G] with C = {len(captions)} captions, got {coverage_CGG.shape}")
    columns = [_stack([coverage_overlay(picture, coverage_CGG[c], side=side), strips[c]], False) for c in shown]
    return _stack([tile, *columns], horizontal=True)


def _boxes_to_draw(boxes_M4: np.ndarray, linked: list[list[int]] | None) -> list[int]:
    """Indices of the boxes a sample panel draws: those linked to the shown captions (all boxes without links), at
    most ``MAX_BOXES`` of them, the largest first when there are more, then in box order."""
    picked = sorted({int(m) for boxes in linked for m in boxes}) if linked is not None else range(len(boxes_M4))
    picked = list(picked)
    if len(picked) > MAX_BOXES:
        area = (boxes_M4[picked, 2] - boxes_M4[picked, 0]) * (boxes_M4[picked, 3] - boxes_M4[picked, 1])
        picked = sorted(picked[i] for i in np.argsort(-area, kind="stable")[:MAX_BOXES])
    return picked


def _note(tile: Image.Image, text: str, font_size: int = 10) -> None:
    """``text`` in black on a white band across the bottom of ``tile``, in place."""
    font = _font(font_size)
    top = tile.height - _line_height(font) - 2
    draw = ImageDraw.Draw(tile)
    draw.rectangle([0, top, tile.width, tile.height], fill=WHITE)
    draw.text((2, top + 1), text, fill=BLACK, font=font)


def detector_panel(
    image: ImageLike,
    caption: str,
    words: Sequence[str],
    coverage: np.ndarray | None,
    scores: np.ndarray | Sequence[float],
    kept: np.ndarray | Sequence[int],
    grid: int,
    side: int = 256,
) -> Image.Image:
    """The paper's Figure 4: PTA labels | detector scores | kept patches side by side, the caption underneath.

    ``coverage`` is the caption's uint8 ``[G, G]`` (None: no labels, the first tile is the plain image), ``scores``
    the detector's ``[G*G]`` or ``[G, G]`` logits or probabilities (shown min-max scaled), ``kept`` its ``[K]``
    row-major patch indices.
    """
    scores_GG = _square(scores, "scores", grid).astype(np.float64)
    if not np.isfinite(scores_GG).all():
        raise ValueError("scores must be finite")
    low, high = scores_GG.min(), scores_GG.max()
    scaled = (scores_GG - low) / (high - low) if high > low else np.zeros_like(scores_GG)
    labels = np.zeros((grid, grid)) if coverage is None else _grid_values(coverage, "coverage", grid)
    num_kept = len(np.asarray(kept).ravel())
    tiles = [
        _titled(coverage_overlay(image, labels, side=side), "PTA labels" if coverage is not None else "no labels"),
        _titled(coverage_overlay(image, scaled, color=SCORE_COLOR, side=side), "detector scores"),
        _titled(kept_overlay(image, kept, grid, side=side), f"kept {num_kept}/{grid * grid}"),
    ]
    row = _stack(tiles, horizontal=True)
    return _stack([row, caption_strip(caption, words, width=row.width)], horizontal=False)


def retrieval_panel(
    query: str, images: Sequence[ImageLike], correct: Sequence[bool], scores: Sequence[float], side: int = 128
) -> Image.Image:
    """A text query above its top-ranked images, in rank order, each titled with its rank and score; the images
    that are right answers are framed in green, the others in grey."""
    if not images or len(images) != len(correct) or len(images) != len(scores):
        raise ValueError(f"{len(images)} images, {len(correct)} correct flags and {len(scores)} scores")
    tiles = []
    for rank, (image, right, score) in enumerate(zip(images, correct, scores, strict=True), start=1):
        picture = to_image(image).resize((side, side), Image.Resampling.BILINEAR)
        framed = Image.new("RGB", (side + 8, side + 8), RIGHT_COLOR if right else (200, 200, 200))
        framed.paste(picture, (4, 4))
        tiles.append(_titled(framed, f"{rank}. {score:.3f}{'  right' if right else ''}"))
    row = _stack(tiles, horizontal=True)
    return _stack([caption_strip(query, [], width=row.width), row], horizontal=False)


def grounding_panel(
    image: ImageLike,
    expression: str,
    gold: Sequence[float],
    predicted: Sequence[float],
    iou: float,
    detector_box: Sequence[float] | None = None,
    side: int = 192,
) -> Image.Image:
    """A referring expression under its image, resized to ``side`` x ``side``, with the gold box in green, the
    predicted box in red and, when given, the box around the detector's relevant patches in orange; titled with
    the prediction's IoU (>= 0.5 counts as right)."""
    picture = to_image(image).resize((side, side), Image.Resampling.BILINEAR)
    if detector_box is not None:
        picture = draw_boxes(picture, [detector_box], color=SCORE_COLOR, width=1)
    picture = draw_boxes(draw_boxes(picture, [gold], color=RIGHT_COLOR), [predicted], color=BOX_COLOR)
    tile = _titled(picture, f"IoU {iou:.2f}{'  right' if iou >= 0.5 else ''}")
    return _stack([tile, caption_strip(expression, [], width=tile.width)], horizontal=False)


def contact_sheet(
    panels: Sequence[Image.Image],
    columns: int = 4,
    titles: Sequence[str] | None = None,
    gap: int = 8,
) -> Image.Image:
    """Panels tiled row by row into ``columns`` cells as wide as the widest panel, each under its small title."""
    if not panels:
        raise ValueError("panels must not be empty")
    if columns <= 0:
        raise ValueError(f"columns must be positive, got {columns}")
    if titles is not None and len(titles) != len(panels):
        raise ValueError(f"titles has {len(titles)} entries for {len(panels)} panels")
    cells = [_titled(p, titles[i]) if titles is not None else p for i, p in enumerate(panels)]
    cell_w, num_cols = max(c.width for c in cells), min(columns, len(cells))
    rows = [cells[i : i + num_cols] for i in range(0, len(cells), num_cols)]
    heights = [max(c.height for c in row) for row in rows]
    sheet = Image.new("RGB", (num_cols * (cell_w + gap) + gap, sum(heights) + gap * (len(rows) + 1)), WHITE)
    y = gap
    for row, height in zip(rows, heights, strict=True):
        for j, cell in enumerate(row):
            sheet.paste(cell, (gap + j * (cell_w + gap), y))
        y += height + gap
    return sheet


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write ``image`` as PNG through a temporary file renamed into place, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
