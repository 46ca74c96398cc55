"""Shared fixtures: tiny samples built with our own writer, under tmp_path; nothing touches the network."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from manifests import SCHEMA_VERSION, Sample


def make_jpeg(width: int = 40, height: int = 30, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_sample(key: str = "coco-000001", num_captions: int = 2, num_boxes: int = 2, grid: int = 4) -> Sample:
    source, image_id = key.split("-", 1)
    boxes = [[0.1 * (i + 1), 0.1, 0.1 * (i + 1) + 0.3, 0.6] for i in range(num_boxes)]
    meta = {
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "image_id": image_id,
        "captions": [f"caption {i} of {key}" for i in range(num_captions)],
        "orig_width": 80,
        "orig_height": 60,
        "width": 40,
        "height": 30,
        "boxes": boxes,
        "box_labels": [f"label{i}" for i in range(num_boxes)],
        "box_crowd": [False] * num_boxes,
        "relevant": [
            {"boxes": list(range(min(c, num_boxes))), "words": ["x"] * min(c, num_boxes)} for c in range(num_captions)
        ],
    }
    pta = None
    if num_boxes:
        rng = np.random.default_rng(len(key))
        pta = rng.integers(0, 256, size=(num_captions, grid, grid), dtype=np.uint8)
    return Sample(key=key, image=make_jpeg(seed=len(key)), meta=meta, pta=pta)


@pytest.fixture
def sample_factory():
    return make_sample
