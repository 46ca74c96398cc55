"""Patch coverage: hand-computed cases and agreement with an independent rasterization (pycocotools masks)."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from manifests.labels import coverage_fraction, labels_from_coverage, patch_coverage


def test_box_exactly_on_patch_borders():
    cov = patch_coverage([[0.25, 0.5, 0.75, 1.0]], [[0]], 4)
    expected = np.zeros((1, 4, 4), np.uint8)
    expected[0, 2:4, 1:3] = 255
    np.testing.assert_array_equal(cov, expected)


def test_box_inside_one_patch():
    # a box of a quarter of a patch's width and half its height inside patch (row 1, col 2) of a 4x4 grid
    frac = coverage_fraction([[0.55, 0.3, 0.6125, 0.425]], [[0]], 4)
    assert frac[0, 1, 2] == pytest.approx(0.25 * 0.5)
    assert np.count_nonzero(frac) == 1
    assert patch_coverage([[0.55, 0.3, 0.6125, 0.425]], [[0]], 4)[0, 1, 2] == 32  # ceil(0.125 * 255)


def test_overlapping_boxes_counted_once():
    boxes = [[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.5], [0.25, 0.0, 0.75, 0.5]]
    frac = coverage_fraction(boxes, [[0, 1, 2]], 2)
    np.testing.assert_allclose(frac[0], [[1.0, 0.5], [0.0, 0.0]])


def test_empty_group_and_no_boxes_give_zeros():
    cov = patch_coverage([[0.1, 0.1, 0.9, 0.9]], [[], [0]], (3, 5))
    assert cov.shape == (2, 3, 5) and cov.dtype == np.uint8
    assert not cov[0].any() and cov[1].any()
    assert patch_coverage(np.zeros((0, 4)), [[], []], 4).shape == (2, 4, 4)


def test_tiny_overlap_is_positive_and_full_is_255():
    cov = patch_coverage([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.001, 0.001]], [[0], [1]], 4)
    assert (cov[0] == 255).all()
    assert cov[1, 0, 0] == 1 and cov[1].sum() == 1


def test_rejects_bad_groups():
    with pytest.raises(ValueError, match="names boxes"):
        patch_coverage([[0, 0, 1, 1]], [[1]], 4)
    with pytest.raises(ValueError, match="grid must be positive"):
        patch_coverage([[0, 0, 1, 1]], [[0]], 0)


def test_labels_threshold():
    cov = np.array([[[0, 1, 128, 255]]], dtype=np.uint8)
    np.testing.assert_array_equal(labels_from_coverage(cov), [[[False, True, True, True]]])
    np.testing.assert_array_equal(labels_from_coverage(cov, 0.5), [[[False, False, True, True]]])
    with pytest.raises(ValueError, match="tau"):
        labels_from_coverage(cov, 1.0)


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_pycocotools_rasterization(seed):
    rng = np.random.default_rng(seed)
    grid, patch = 16, 16
    size = grid * patch
    num_boxes = 9
    xy = np.sort(rng.integers(0, size + 1, size=(num_boxes, 2, 2)), axis=2)  # integer pixel boxes
    xy[:, :, 1] = np.maximum(xy[:, :, 1], xy[:, :, 0] + 1)
    xy = np.minimum(xy, size)
    x0, x1, y0, y1 = xy[:, 0, 0], xy[:, 0, 1], xy[:, 1, 0], xy[:, 1, 1]
    groups = [sorted(rng.choice(num_boxes, size=k, replace=False).tolist()) for k in (1, 2, 4, 9, 0)]

    bboxes = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1).astype(np.float64)
    rles = mask_utils.frPyObjects(bboxes, size, size)
    masks_HWM = mask_utils.decode(rles).astype(bool)
    expected = np.zeros((len(groups), grid, grid))
    for c, group in enumerate(groups):
        union = masks_HWM[:, :, group].any(axis=2) if group else np.zeros((size, size), bool)
        expected[c] = union.reshape(grid, patch, grid, patch).mean(axis=(1, 3))

    boxes = np.stack([x0, y0, x1, y1], axis=1) / size
    got = patch_coverage(boxes, groups, grid).astype(int)
    want = np.ceil(expected * 255 - 1e-4).astype(int)
    assert np.abs(got - want).max() <= 1
