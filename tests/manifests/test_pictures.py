"""Pictures: pixel values where tints, outlines and highlights must (and must not) be, sizes, PNG round trip."""

import io

import numpy as np
import pytest
from PIL import Image

from manifests import pictures
from manifests.labels import patch_coverage

GREY = 128
SIDE = 64  # 4x4 grid of 16 px cells


def grey_image(height: int = SIDE, width: int = SIDE) -> np.ndarray:
    return np.full((height, width, 3), GREY, dtype=np.uint8)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


def test_coverage_overlay_tints_covered_cells_only():
    coverage = patch_coverage([[0.0, 0.0, 0.5, 0.5]], [[0]], 4)[0]  # top-left quadrant: cells = 255
    out = pixels(pictures.coverage_overlay(grey_image(), coverage, color=(255, 0, 0), alpha=0.5, side=SIDE))
    assert out.shape == (SIDE, SIDE, 3)
    # inside covered cells, away from the 1 px grid lines at multiples of 16: half way to red
    np.testing.assert_array_equal(out[2:15, 2:15], np.broadcast_to([192, 64, 64], (13, 13, 3)))
    np.testing.assert_array_equal(out[18:31, 18:31], np.broadcast_to([192, 64, 64], (13, 13, 3)))
    assert (out[33:48, 33:48] == GREY).all() and (out[49:, 49:] == GREY).all()  # bottom-right: untouched grey
    assert (out[48, 40] > GREY).all()  # a grid line, lightened


def test_coverage_overlay_scales_with_value_and_accepts_flat_floats():
    values = np.zeros(16)
    values[5] = 0.5  # row 1, col 1
    out = pixels(pictures.coverage_overlay(grey_image(), values, color=(0, 0, 255), alpha=1.0, side=SIDE))
    np.testing.assert_array_equal(out[20, 20], [64, 64, 192])
    np.testing.assert_array_equal(out[20, 40], [GREY] * 3)
    plain = pixels(pictures.coverage_overlay(grey_image(), np.zeros((4, 4)), side=SIDE, grid_lines=False))
    assert (plain == GREY).all()


def test_coverage_overlay_resizes_to_side():
    assert pictures.coverage_overlay(grey_image(30, 50), np.zeros((4, 4), np.uint8), side=32).size == (32, 32)


def test_kept_overlay_darkens_dropped_cells():
    kept = [0, 5, 15]  # row-major: (0, 0), (1, 1), (3, 3)
    out = pixels(pictures.kept_overlay(grey_image(), kept, 4, side=SIDE, dim=0.5, grid_lines=False))
    for index in range(16):
        row, col = divmod(index, 4)
        cell = out[row * 16 : (row + 1) * 16, col * 16 : (col + 1) * 16]
        assert (cell == (GREY if index in kept else GREY // 2)).all(), index


def test_kept_overlay_greys_colour():
    red = np.zeros((SIDE, SIDE, 3), np.uint8)
    red[..., 0] = 200
    out = pixels(pictures.kept_overlay(red, np.array([], dtype=np.int64), 4, side=SIDE, dim=1.0, grid_lines=False))
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_draw_boxes_outline_at_edges_not_inside():
    color = (255, 0, 0)
    out = pixels(pictures.draw_boxes(grey_image(), [[0.0, 0.0, 0.5, 0.5]], color=color, width=2))
    assert out.shape == (SIDE, SIDE, 3)
    for y, x in [(0, 10), (1, 20), (10, 0), (20, 31), (31, 5), (30, 25)]:
        np.testing.assert_array_equal(out[y, x], color, err_msg=f"{(y, x)}")
    assert (out[4:28, 4:28] == GREY).all()  # inside the box
    assert (out[33:, :] == GREY).all() and (out[:, 33:] == GREY).all()  # outside it


def test_draw_boxes_label_and_bytes_input():
    buf = io.BytesIO()
    Image.fromarray(grey_image()).save(buf, format="PNG")
    out = pixels(pictures.draw_boxes(buf.getvalue(), [[0.25, 0.25, 1.0, 1.0]], ["dog"], color=(0, 255, 0)))
    label_area = out[16:32, 16:40]
    assert (label_area[..., 0] > 200).any()  # white text: red channel, which neither grey nor green has
    assert (label_area == [0, 255, 0]).all(axis=-1).sum() > 100  # on a background of the box colour


def test_caption_strip_highlights_words():
    plain = pixels(pictures.caption_strip("a dog and a cat", [], width=200))
    marked = pixels(pictures.caption_strip("a dog and a cat", ["DOG"], width=200))
    assert plain.shape == marked.shape
    changed = np.argwhere((plain != marked).any(axis=-1))
    assert len(changed)
    x_dog = pictures._font(12).getlength("a ") + 3
    assert changed[:, 1].min() >= x_dog - 2 and changed[:, 1].max() <= x_dog + pictures._font(12).getlength("dog") + 1
    assert (marked == pictures.HIGHLIGHT).all(axis=-1).any()
    # word boundaries: "cat" does not light up "cattle", a phrase spans its inner space
    cattle = pixels(pictures.caption_strip("cattle", ["cat"]))
    np.testing.assert_array_equal(cattle, pixels(pictures.caption_strip("cattle")))
    assert pictures._spans("a hot  dog", ["hot dog"]) == [(2, 10)]


def test_caption_strip_wraps_long_captions():
    short = pictures.caption_strip("a dog", width=120)
    long = pictures.caption_strip(" ".join(["word"] * 40), width=120)
    assert long.width == short.width == 120
    assert long.height >= 5 * (short.height - 6)
    assert pictures.caption_strip("", width=50).size == (50, short.height)  # one empty line


def test_sample_panel_layout():
    boxes = [[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]
    relevant = [{"boxes": [0], "words": ["dog"]}, {"boxes": [1], "words": []}, {"boxes": [], "words": []}]
    captions = ["a dog", "a cat", "nothing"]
    coverage = patch_coverage(boxes, [r["boxes"] for r in relevant], 4)
    panel = pictures.sample_panel(grey_image(40, 80), boxes, ["dog", "cat"], captions, relevant, coverage, 2, SIDE)
    assert panel.width == 3 * SIDE + 2 * pictures.GAP
    strip_h = pictures.caption_strip("a dog", width=SIDE).height
    assert panel.height == SIDE + pictures.GAP + strip_h
    out = pixels(panel)
    x0 = SIDE + pictures.GAP  # first caption's overlay: its top-left quadrant tinted, bottom-right grey
    assert (out[8, x0 + 8] != GREY).any() and (out[40, x0 + 40] == GREY).all()
    no_boxes = pictures.sample_panel(grey_image(), [], [], captions, None, None, side=SIDE)
    assert no_boxes.width == SIDE and no_boxes.height == SIDE + 3 * (strip_h + pictures.GAP)


def test_detector_panel_and_contact_sheet_round_trip(tmp_path):
    scores = np.linspace(-3.0, 3.0, 16)
    coverage = patch_coverage([[0.0, 0.0, 0.5, 0.5]], [[0]], 4)[0]
    panel = pictures.detector_panel(grey_image(), "a dog", ["dog"], coverage, scores, [0, 1, 4, 5], 4, side=SIDE)
    assert panel.width == 3 * SIDE + 2 * pictures.GAP and panel.height > SIDE
    assert pictures.detector_panel(grey_image(), "x", [], None, scores.reshape(4, 4), [], 4, side=SIDE).size == (
        panel.size
    )

    small = Image.new("RGB", (30, 20), (0, 0, 0))
    sheet = pictures.contact_sheet([panel, small, small], columns=2, titles=["a", "b", "c"], gap=5)
    cell_w = panel.width
    assert sheet.width == 2 * cell_w + 3 * 5
    assert sheet.height > panel.height + small.height + 3 * 5
    path = pictures.save_png(sheet, tmp_path / "sub" / "sheet.png")
    assert path.exists() and not list(path.parent.glob(".*tmp"))
    with Image.open(path) as reread:
        assert reread.format == "PNG" and reread.size == sheet.size
        np.testing.assert_array_equal(np.asarray(reread.convert("RGB")), np.asarray(sheet))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: pictures.coverage_overlay(grey_image(), np.zeros((4, 3))), "grid_values must be a square grid"),
        (lambda: pictures.coverage_overlay(grey_image(), np.zeros(15)), "grid_values must be a square grid"),
        (lambda: pictures.coverage_overlay(grey_image(), np.full((4, 4), 2.0)), "grid_values must be uint8"),
        (lambda: pictures.coverage_overlay(grey_image(), np.zeros((4, 4)), alpha=2), "alpha"),
        (lambda: pictures.coverage_overlay(grey_image(), np.zeros((8, 8)), side=4), "side"),
        (lambda: pictures.kept_overlay(grey_image(), [16], 4), "kept indices"),
        (lambda: pictures.kept_overlay(grey_image(), [-1], 4), "kept indices"),
        (lambda: pictures.kept_overlay(grey_image(), [0.5], 4), "kept must be integer"),
        (lambda: pictures.kept_overlay(grey_image(), [0], 0), "grid"),
        (lambda: pictures.draw_boxes(grey_image(), [[0, 0, 64, 64]]), "boxes must be normalized"),
        (lambda: pictures.draw_boxes(grey_image(), [[0.5, 0, 0.1, 1]]), "x0 <= x1"),
        (lambda: pictures.draw_boxes(grey_image(), [[0, 0, 1]]), r"boxes must be \[M, 4\]"),
        (lambda: pictures.draw_boxes(grey_image(), [[0, 0, 1, 1]], ["a", "b"]), "labels"),
        (lambda: pictures.draw_boxes(np.zeros((4, 4), np.uint8), []), "image must be"),
        (lambda: pictures.draw_boxes(b"not an image", []), "image bytes"),
        (lambda: pictures.caption_strip("a", width=0), "width"),
        (lambda: pictures.sample_panel(grey_image(), [], [], ["a"], [], None), "relevant"),
        (lambda: pictures.sample_panel(grey_image(), [], [], ["a"], None, np.zeros((2, 4, 4))), "coverage"),
        (lambda: pictures.detector_panel(grey_image(), "a", [], None, np.zeros(9), [], 4), "scores has grid 3"),
        (lambda: pictures.detector_panel(grey_image(), "a", [], None, [np.nan] * 16, [], 4), "scores must be"),
        (lambda: pictures.contact_sheet([]), "panels"),
        (lambda: pictures.contact_sheet([Image.new("RGB", (2, 2))], columns=0), "columns"),
        (lambda: pictures.contact_sheet([Image.new("RGB", (2, 2))], titles=[]), "titles"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_a_sample_with_hundreds_of_boxes_still_shows_its_image():
    rng = np.random.default_rng(0)
    corner = rng.uniform(0, 0.8, size=(300, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(0.05, 0.2, size=(300, 2))], axis=1)  # VG-like regions
    labels = [f"region {m} of the picture" for m in range(300)]
    captions = ["a dog", "a cat", "a red ball"]
    relevant = [{"boxes": [3], "words": ["dog"]}, {"boxes": [7, 8], "words": ["cat"]}, {"boxes": [9], "words": []}]
    coverage = patch_coverage(boxes, [r["boxes"] for r in relevant], 4)
    panel = pictures.sample_panel(grey_image(), boxes, labels, captions, relevant, coverage, 2, SIDE)
    tile = pixels(panel)[:SIDE, :SIDE]
    image_part = tile[: SIDE - 14]  # above the note band
    assert (image_part == GREY).all(axis=2).mean() > 0.6  # the picture, not a block of labels
    assert (tile[-4:] == 255).all(axis=2).mean() > 0.5  # the white band of the "3 of 300 boxes" note
    assert pictures._boxes_to_draw(boxes, [[3], [7, 8]]) == [3, 7, 8]  # the shown captions' boxes only
    largest = pictures._boxes_to_draw(boxes, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    assert len(largest) == pictures.MAX_BOXES and set(largest) == set(np.argsort(-area)[: pictures.MAX_BOXES])
    everything = pictures.draw_boxes(grey_image(), boxes, labels)  # what the panel drew before
    assert (pixels(everything) == GREY).all(axis=2).mean() < 0.3
