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


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` are skipped, with the reason, where torch sees no CUDA device."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def sample_factory():
    return make_sample


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    """100 images (75% annotated) packed into 60-sample shards without Ray: 2 shards, labels on an 8 x 8 grid."""
    from tests.model.corpus import packed_corpus

    return packed_corpus(tmp_path_factory.mktemp("small_corpus"), images=100)


@pytest.fixture(scope="session")
def learning_corpus(tmp_path_factory):
    """300 images (75% annotated) in 5 shards: enough for the tiny model to learn where the named objects are."""
    from tests.model.corpus import packed_corpus

    return packed_corpus(tmp_path_factory.mktemp("learning_corpus"), images=300)


@pytest.fixture(scope="session")
def karpathy_corpus(tmp_path_factory):
    """``copa synth --karpathy 500``: 300 training and 100 test images of five captions each, packed per split."""
    from tests.model.corpus import packed_karpathy

    return packed_karpathy(tmp_path_factory.mktemp("karpathy_corpus"), images=500)


@pytest.fixture(scope="session")
def tasks_corpus(tmp_path_factory):
    """``copa synth --vqa 500 --refexp 2000``, every split packed at 64 px (see ``tests.model.corpus.packed_tasks``).
    Grounding needs the 1,200 training pictures: on 300 it overfits and beat the best fixed box at one seed of two."""
    from tests.model.corpus import packed_tasks

    return packed_tasks(tmp_path_factory.mktemp("tasks_corpus"), refexp=2000)
