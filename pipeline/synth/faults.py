"""Deliberately bad items for the synthetic corpus (`copa synth --faults`), each listed in `faults.json`.

Every fault is recorded as {"kind", "source", "where", "expect"}. `where` names the annotation file and the record
(web: `index` into the JSON list; COCO: `annotation_id` and `image_id`) and the image path relative to the
output folder (null for a box fault's image when irrelevant). `expect` says what a correct reader does:
"reject" the row, "convert" a valid but unusual image (never reject it), "drop_box" or "clip_box".

Faults are *added* to the clean corpus (extra web rows, extra COCO annotations), so the clean part of a corpus
is the same with and without `--faults`. Bad COCO boxes use a category that no picture draws (toothbrush), so no
caption's ground truth depends on them.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

FAULT_CATEGORY_ID = 90  # toothbrush: never drawn, so bad boxes never touch a caption's truth
ESCAPE_FILE = "outside.jpg"  # written in the output folder, outside the web image root


@dataclass
class FaultContext:
    """Where faults go: the in-memory annotation lists (written to disk after this) and how to make pictures."""

    out: Path  # output folder of the corpus
    coco_image: dict  # COCO image record (id, file_name, width, height) that the bad boxes belong to
    coco_instances: list[dict]  # COCO instance annotations; bad boxes are appended
    next_annotation_id: int  # first unused COCO instance annotation id
    web_lists: dict[str, list[dict]]  # "cc3m" / "sbu" -> rows of the web JSON lists; bad rows are appended
    make_sample: Callable[[int], tuple[np.ndarray, str]]  # j -> (RGB uint8 picture, caption) for fault j
    jpeg_quality: int  # JPEG quality for fault pictures


def _jpeg_bytes(pixels: np.ndarray, quality: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _truncated_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """The first 60% of a valid JPEG: the header parses, the scan data ends early."""
    data = _jpeg_bytes(pixels, quality)
    return data[: len(data) * 3 // 5]


def _gray16_png(pixels: np.ndarray, quality: int) -> bytes:
    """A 16-bit grayscale PNG (PIL mode "I;16"): valid, but needs conversion before JPEG encoding."""
    del quality  # PNG is lossless; the argument keeps every payload maker's signature alike
    gray = pixels.astype(np.uint32).sum(axis=2) * 65535 // (3 * 255)
    buffer = io.BytesIO()
    Image.fromarray(gray.astype(np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(pixels: np.ndarray, quality: int) -> bytes:
    return _jpeg_bytes(pixels, quality)


def _cmyk_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    return _jpeg_bytes(pixels, quality, mode="CMYK")


def _constant(data: bytes) -> Callable[[np.ndarray, int], bytes]:
    return lambda pixels, quality: data


# source, kind, expect, file bytes from (picture, quality) or None for no file, caption override, file extension
_WEB_FAULTS: tuple[tuple[str, str, str, Callable[[np.ndarray, int], bytes] | None, str | None, str], ...] = (
    ("cc3m", "truncated_jpeg", "reject", _truncated_jpeg, None, "jpg"),
    ("cc3m", "zero_byte_file", "reject", _constant(b""), None, "jpg"),
    ("cc3m", "not_an_image", "reject", _constant(b"this is a text file, not a JPEG image\n"), None, "jpg"),
    ("cc3m", "missing_file", "reject", None, None, "jpg"),
    ("cc3m", "cmyk_jpeg", "convert", _cmyk_jpeg, None, "jpg"),
    ("cc3m", "gray16_png", "convert", _gray16_png, None, "png"),
    ("sbu", "empty_caption", "reject", _jpeg, "", "jpg"),
    # A lone surrogate: json.dumps writes it as the escape \udcff, json.load gives it back, UTF-8 cannot encode it.
    ("sbu", "non_utf8_caption", "reject", _jpeg, "a red ball \udcff on the left", "jpg"),
)


def _web_faults(ctx: FaultContext) -> list[dict]:
    faults: list[dict] = []
    for j, (source, kind, expect, make_bytes, caption, ext) in enumerate(_WEB_FAULTS):
        rows = ctx.web_lists[source]
        pixels, generated_caption = ctx.make_sample(j)
        rel = f"images/{source}/{len(rows):09d}.{ext}"  # continues the list's own numbering
        if make_bytes is not None:
            path = ctx.out / "web" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(make_bytes(pixels, ctx.jpeg_quality))
        rows.append({"image": rel, "caption": generated_caption if caption is None else caption})
        where = {"file": f"web/{source}_train.json", "index": len(rows) - 1, "image": f"web/{rel}"}
        faults.append({"kind": kind, "source": source, "where": where, "expect": expect})

    # A row whose path climbs out of the web image root to a real, valid file: an escape, not a missing file.
    rows = ctx.web_lists["sbu"]
    pixels, caption = ctx.make_sample(len(_WEB_FAULTS))
    (ctx.out / ESCAPE_FILE).write_bytes(_jpeg(pixels, ctx.jpeg_quality))
    rows.append({"image": f"../{ESCAPE_FILE}", "caption": caption})
    where = {"file": "web/sbu_train.json", "index": len(rows) - 1, "image": ESCAPE_FILE}
    faults.append({"kind": "path_escape", "source": "sbu", "where": where, "expect": "reject"})
    return faults


def _coco_faults(ctx: FaultContext) -> list[dict]:
    width, height = ctx.coco_image["width"], ctx.coco_image["height"]
    bad_boxes = (
        ("box_outside_image", [width + 5.0, 10.0, 20.0, 15.0], "drop_box"),
        ("box_partly_outside", [width - 20.0, height - 15.0, 40.0, 30.0], "clip_box"),
        ("nan_box", [float("nan"), 10.0, 20.0, 20.0], "drop_box"),
        ("negative_size_box", [30.0, 30.0, -15.0, 20.0], "drop_box"),
    )
    faults = []
    for offset, (kind, (x, y, w, h), expect) in enumerate(bad_boxes):
        ann_id = ctx.next_annotation_id + offset
        ctx.coco_instances.append(
            {
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                "area": w * h,
                "iscrowd": 0,
                "image_id": ctx.coco_image["id"],
                "bbox": [x, y, w, h],
                "category_id": FAULT_CATEGORY_ID,
                "id": ann_id,
            }
        )
        where = {
            "file": "coco/annotations/instances_train2017.json",
            "annotation_id": ann_id,
            "image_id": ctx.coco_image["id"],
            "image": f"coco/train2017/{ctx.coco_image['file_name']}",
        }
        faults.append({"kind": kind, "source": "coco", "where": where, "expect": expect})
    return faults


def write_faults(ctx: FaultContext) -> list[dict]:
    """Write the fault files, append the fault rows and boxes to the in-memory lists, return faults.json's list."""
    return _web_faults(ctx) + _coco_faults(ctx)


FAULT_KINDS = (
    "truncated_jpeg",
    "zero_byte_file",
    "not_an_image",
    "missing_file",
    "cmyk_jpeg",
    "gray16_png",
    "empty_caption",
    "non_utf8_caption",
    "path_escape",
    "box_outside_image",
    "box_partly_outside",
    "nan_box",
    "negative_size_box",
)
