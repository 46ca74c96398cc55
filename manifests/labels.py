"""Patch-Text Alignment labels: the coverage of each patch by the union of a caption's relevant boxes (DESIGN 5).

One function serves the packer (the canonical grid, stored as ``<key>.pta.npy``) and the trainer (any grid, after
an augmentation moved the boxes), so both give the same numbers for the same boxes. It lives in ``manifests``
because the trainer may not import ``pipeline``.

The union area is computed *exactly*, not by sampling: per caption, the sorted x and y edges of its boxes and of
all patch borders cut the image into elementary cells that are each wholly inside the union or wholly outside it,
and each lies in exactly one patch. Coverage = summed area of covered cells in a patch / patch area. Everything is
vectorized over captions, boxes and cells (one ``bincount`` scatters cells into patches); ``copa bench labels``
measures it against JPEG decoding.

uint8 encoding: ``ceil(255 * fraction)`` (with a 1e-6 tolerance against float noise), so every patch that a box
really overlaps is nonzero and the default train-time rule ``coverage > tau`` with ``tau = 0`` means "any overlap"
(the X-VLM convention), and a fully covered patch is 255.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_EPS = 1e-6


def patch_coverage(
    boxes: np.ndarray | Sequence[Sequence[float]],
    groups: Sequence[Sequence[int]],
    grid: int | tuple[int, int],
) -> np.ndarray:
    """Coverage of each patch by the union of each group's boxes, as uint8 ``[num_groups, Gh, Gw]``.

    boxes: ``[M, 4]`` normalized ``x0, y0, x1, y1`` in [0, 1] of the image (values outside are clipped).
    groups: per caption, the indices of its relevant boxes (an empty group gives a zero grid).
    grid: ``G`` for a square grid or ``(Gh, Gw)``.
    """
    return quantize(coverage_fraction(boxes, groups, grid))


def quantize(fraction: np.ndarray) -> np.ndarray:
    return np.ceil(np.clip(fraction, 0.0, 1.0) * 255.0 - 255.0 * _EPS).clip(0, 255).astype(np.uint8)


def coverage_fraction(
    boxes: np.ndarray | Sequence[Sequence[float]],
    groups: Sequence[Sequence[int]],
    grid: int | tuple[int, int],
) -> np.ndarray:
    """Like ``patch_coverage`` but the exact fraction as float64 ``[num_groups, Gh, Gw]`` in [0, 1]."""
    grid_h, grid_w = (grid, grid) if isinstance(grid, int) else grid
    if grid_h <= 0 or grid_w <= 0:
        raise ValueError(f"grid must be positive, got {grid}")
    boxes_M4 = np.clip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), 0.0, 1.0)
    num_groups, num_boxes = len(groups), len(boxes_M4)
    max_group = max((len(g) for g in groups), default=0)
    if max_group == 0:
        return np.zeros((num_groups, grid_h, grid_w))

    # Each caption's boxes, padded with an empty box (index num_boxes) to the longest group.
    index_CK = np.full((num_groups, max_group), num_boxes)
    for c, group in enumerate(groups):
        if len(group) and (min(group) < 0 or max(group) >= num_boxes):
            raise ValueError(f"group {c} names boxes {list(group)} but there are {num_boxes}")
        index_CK[c, : len(group)] = group
    boxes_CK4 = np.concatenate([boxes_M4, np.zeros((1, 4))])[index_CK]

    # Per caption, cut the image at its box edges and at every patch border: each elementary cell is wholly
    # inside or outside the union and lies in one patch. Padding adds zero-width cells, which weigh nothing.
    def cuts(lo, hi, num_patches):
        borders = np.broadcast_to(np.linspace(0.0, 1.0, num_patches + 1), (num_groups, num_patches + 1))
        edges = np.sort(np.concatenate([borders, boxes_CK4[:, :, lo], boxes_CK4[:, :, hi]], axis=1), axis=1)
        centres = (edges[:, :-1] + edges[:, 1:]) / 2
        inside_CKL = (boxes_CK4[:, :, lo, None] <= centres[:, None]) & (centres[:, None] < boxes_CK4[:, :, hi, None])
        patch = np.minimum((centres * num_patches).astype(np.int64), num_patches - 1)
        return np.diff(edges, axis=1), inside_CKL, patch

    dx_CX, inside_x_CKX, patch_x_CX = cuts(0, 2, grid_w)
    dy_CY, inside_y_CKY, patch_y_CY = cuts(1, 3, grid_h)
    covered_CYX = (inside_y_CKY[:, :, :, None] & inside_x_CKX[:, :, None, :]).any(axis=1)
    area_CYX = covered_CYX * dy_CY[:, :, None] * dx_CX[:, None, :]
    row_CY = (np.arange(num_groups)[:, None] * grid_h + patch_y_CY) * grid_w
    flat_CYX = row_CY[:, :, None] + patch_x_CX[:, None, :]
    area = np.bincount(flat_CYX.ravel(), weights=area_CYX.ravel(), minlength=num_groups * grid_h * grid_w)
    return np.clip(area.reshape(num_groups, grid_h, grid_w) * (grid_h * grid_w), 0.0, 1.0)


def labels_from_coverage(coverage: np.ndarray, tau: float = 0.0) -> np.ndarray:
    """Train-time binary labels: ``coverage / 255 > tau`` for a uint8 coverage grid and ``tau`` in [0, 1)."""
    if not 0.0 <= tau < 1.0:
        raise ValueError(f"tau must be in [0, 1), got {tau}")
    return coverage.astype(np.float32) / 255.0 > tau
