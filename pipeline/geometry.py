"""Box geometry: COCO/VG pixel boxes to clipped x0, y0, x1, y1, and to normalized boxes of a resized image.

A box that is NaN, has no area, or lies wholly outside the image is dropped with a reason; one that overlaps the
image is clipped to it (DESIGN section 6). Readers count both.
"""

from __future__ import annotations

import math
from collections import Counter

BOX_OK, BOX_CLIPPED = "ok", "clipped"
DROP_NAN, DROP_EMPTY, DROP_OUTSIDE = "nan_box", "empty_box", "outside_image"
DROP_REASONS = (DROP_NAN, DROP_EMPTY, DROP_OUTSIDE)


def clip_xywh(box, width: int, height: int) -> tuple[list[float] | None, str]:
    """``[x, y, w, h]`` in pixels -> (``[x0, y0, x1, y1]`` clipped to the image, "ok"/"clipped"), or (None, reason).

    With an unknown image size (``width`` or ``height`` 0) boxes are only checked, not clipped: pack clips them
    once it has decoded the image.
    """
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError):
        return None, DROP_NAN
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return None, DROP_NAN
    if w <= 0 or h <= 0:
        return None, DROP_EMPTY
    return clip_xyxy([x, y, x + w, y + h], width, height)


def clip_counted(box, width: int, height: int, stats: Counter) -> tuple[list[float] | None, str]:
    """``clip_xywh``, also counting its outcome in ``stats`` when it is not "ok": a drop reason or "clipped" (how the
    readers report box problems that rows alone do not show)."""
    xyxy, status = clip_xywh(box, width, height)
    if status != BOX_OK:
        stats[status] += 1
    return xyxy, status


def clip_xyxy(box, width: float, height: float) -> tuple[list[float] | None, str]:
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        return None, DROP_NAN
    if x1 <= x0 or y1 <= y0:
        return None, DROP_EMPTY
    if width <= 0 or height <= 0:
        return [x0, y0, x1, y1], BOX_OK
    cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
    if cx1 <= cx0 or cy1 <= cy0:
        return None, DROP_OUTSIDE
    clipped = (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1)
    return [cx0, cy0, cx1, cy1], BOX_CLIPPED if clipped else BOX_OK


def normalize(box, width: float, height: float, digits: int = 6) -> list[float]:
    """Pixel ``[x0, y0, x1, y1]`` -> fractions of the image, rounded so the JSON member stays short and stable."""
    return [
        round(min(max(box[0] / width, 0.0), 1.0), digits),
        round(min(max(box[1] / height, 0.0), 1.0), digits),
        round(min(max(box[2] / width, 0.0), 1.0), digits),
        round(min(max(box[3] / height, 0.0), 1.0), digits),
    ]
