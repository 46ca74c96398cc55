"""Synthetic COPA batches: coloured squares on a zero background, a caption naming colour and place, and the
square's exact patch coverage (so PTA labels are known)."""

from __future__ import annotations

import pytest
import torch

from model.config import COPAConfig

COLOURS = [(r, g, b) for r in (-1.0, 1.0) for g in (-1.0, 1.0) for b in (-1.0, 0.0, 1.0)]  # 12, none all-zero
PLACES = ["top left", "top right", "bottom left", "bottom right"]


def synthetic_batch(cfg: COPAConfig, num: int = 8, labelled: int | None = None, seed: int = 0) -> dict:
    """``num`` samples of distinct colours, each square in one quadrant; the first ``labelled`` have labels (and the
    square's box, as a grounding referent). The VQA answer of each is its colour word.

    Distinct colours make every caption and image tell apart from the others by one attribute, which keeps the
    overfitting test about learning rather than about breaking ties between near-duplicates.
    """
    g = torch.Generator().manual_seed(seed)
    S, G, t = cfg.vision.img_size, cfg.vision.grid_size, cfg.text
    if num > len(COLOURS):
        raise ValueError(f"at most {len(COLOURS)} samples")
    colours = torch.randperm(len(COLOURS), generator=g)[:num].tolist()
    places = torch.randint(0, len(PLACES), (num,), generator=g).tolist()
    image = torch.zeros(num, 3, S, S)
    coverage = torch.zeros(num, G, G, dtype=torch.uint8)
    T = 8
    ids = torch.full((num, T), t.pad_id, dtype=torch.long)
    box = torch.zeros(num, 4)
    answer_ids = torch.full((num, 3), t.pad_id, dtype=torch.long)
    for i, (colour, place) in enumerate(zip(colours, places, strict=True)):
        row, col = divmod(place, 2)  # the quadrant
        top, left = row * S // 2, col * S // 2
        image[i, :, top : top + S // 2, left : left + S // 2] = torch.tensor(COLOURS[colour])[:, None, None]
        coverage[i, row * G // 2 : (row + 1) * G // 2, col * G // 2 : (col + 1) * G // 2] = 255
        # [CLS] a <colour> square <vertical> <horizontal> [SEP]; word ids start at 10, clear of the specials
        words = [10, 20 + colour, 30, 40 + row, 50 + col]
        ids[i, : len(words) + 2] = torch.tensor([t.cls_id, *words, t.sep_id])
        box[i] = torch.tensor([col, row, col + 1, row + 1]) / 2
        answer_ids[i] = torch.tensor([t.cls_id, 20 + colour, t.sep_id])
    labelled = num if labelled is None else labelled
    return {
        "image": image + 0.1 * torch.randn(image.shape, generator=g),
        "input_ids": ids,
        "attention_mask": (ids != t.pad_id).long(),
        "coverage": coverage,
        "has_labels": torch.arange(num) < labelled,
        "box": box,
        "has_box": torch.arange(num) < labelled,
        "answer_ids": answer_ids,
        "answer_mask": (answer_ids != t.pad_id).long(),
    }


@pytest.fixture
def make_batch():
    return synthetic_batch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine spinning OpenMP workers make each step
    ten times slower when another process holds a core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
