"""The model pieces of VQA and grounding: the box loss, answer ranking, the detector's box; both heads learn."""

import dataclasses

import pytest
import torch
from torchvision.ops import box_iou

from model.copa import COPA
from model.downstream import settings
from model.losses import box_loss, caption_split
from model.tpd import detector_boxes
from model.utils import seed_everything
from tests.model.test_downstream import tiny_task


def test_box_loss_by_hand():
    pred = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.1, 0.1, 0.2, 0.2], [0.0, 0.0, 1.0, 1.0]])
    gold = torch.tensor([[0.25, 0.25, 0.75, 0.75], [0.1, 0.1, 0.2, 0.2], [0.5, 0.5, 0.6, 0.6]])
    loss, iou = box_loss(pred, gold, torch.tensor([True, True, False]))
    # sample 0: centres 0.25 apart in x and y, same size -> L1 0.5; IoU 0.0625 / 0.4375, enclosing box 0.5625:
    # GIoU = 1/7 - (0.5625 - 0.4375) / 0.5625, loss 1 - GIoU. Sample 1 is exact (0); sample 2 has no box.
    giou = 1 / 7 - 0.125 / 0.5625
    assert loss.item() == pytest.approx((0.5 + 1 - giou + 0.0) / 2, abs=1e-5)  # float32, eps in the GIoU
    assert iou.item() == pytest.approx((1 / 7 + 1.0) / 2, abs=1e-6)
    none, _ = box_loss(pred, gold, torch.zeros(3, dtype=torch.bool))
    assert none.item() == 0.0


def test_detector_boxes_bound_the_relevant_patches():
    logits = torch.full((3, 16), -3.0)
    logits[0, [5, 6, 10]] = 2.0  # rows 1-2, columns 1-2 of a 4 x 4 grid
    logits[1, 15], logits[1, 3] = -0.5, -1.0  # none relevant: the likeliest patch alone
    logits[2, [2, 12]] = 1.0  # row 0 column 2 and row 3 column 0: the box spans both
    idx = torch.arange(16).expand(3, -1)
    boxes = detector_boxes(logits, idx, 4).tolist()
    assert boxes == [[0.25, 0.25, 0.75, 0.75], [0.75, 0.75, 1.0, 1.0], [0.0, 0.0, 0.75, 1.0]]
    # a later detector scores only some patches: the others count as not relevant
    assert detector_boxes(logits[:1, [5, 6]], torch.tensor([[5, 6]]), 4).tolist() == [[0.25, 0.25, 0.75, 0.5]]


def test_settings_measure_keep_ratio_one_once():
    assert settings([(3,), (6,)], (1.0, 0.5, 0.3)) == [((3,), 1.0), ((3,), 0.5), ((3,), 0.3), ((6,), 0.5), ((6,), 0.3)]


@torch.no_grad()
def test_rank_answers_picks_the_likeliest_whole_answer(make_batch):
    seed_everything(0)
    cfg = tiny_task("vqa")
    model = COPA(cfg).eval()
    batch = make_batch(cfg, num=4)
    t = cfg.text
    candidates = torch.tensor([[t.cls_id, 20 + i, 30 + j, t.sep_id] for i in range(4) for j in range(3)]
                              + [[t.cls_id, 25, t.sep_id, t.pad_id]])  # fmt: skip
    A = len(candidates)
    # brute force: each candidate's summed log-probability, teacher-forced, per question
    split = caption_split(candidates, (candidates != t.pad_id).long(), t)
    memory, memory_mask = model._prefix_memory(batch["image"], batch["input_ids"], batch["attention_mask"])
    totals = torch.empty(4, A)
    for b in range(4):
        h = model.decoder(model.text_encoder.embed(split.decoder_ids), split.decoder_mask,
                          memory[b : b + 1].expand(A, -1, -1), memory_mask[b : b + 1].expand(A, -1))  # fmt: skip
        logp = model.lm_head(h, model._embedding()).float().log_softmax(-1)
        for a in range(A):
            keep = split.targets[a] >= 0
            totals[b, a] = logp[a, keep].gather(1, split.targets[a, keep][:, None]).sum()
    best = model.rank_answers(batch["image"], batch["input_ids"], batch["attention_mask"], candidates, k=A)
    assert best.tolist() == totals.argmax(1).tolist()
    # k = 1: the candidate whose first token is likeliest (ties go to the first such candidate)
    first = model.rank_answers(batch["image"], batch["input_ids"], batch["attention_mask"], candidates, k=1)
    step = model._next_logits(torch.full((4, 1), t.bos_id), memory, memory_mask).log_softmax(-1)
    assert (
        step[torch.arange(4), split.targets[first, 0]].tolist() == step[:, split.targets[:, 0]].max(1).values.tolist()
    )


def _train(model: COPA, batch: dict, steps: int, lr: float) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(batch)["loss"].backward()
        optimizer.step()
    model.eval()


def test_vqa_head_learns_to_answer_the_colour(make_batch):
    seed_everything(0)
    cfg = tiny_task("vqa")
    cfg = dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, dropout=0.0))
    model = COPA(cfg)
    batch = make_batch(cfg, num=8)
    with torch.no_grad():
        before = model.generate(batch["image"], 3, prefix_ids=batch["input_ids"])[:, 0]
    _train(model, batch, 120, 1e-3)
    with torch.no_grad():
        answer = model.generate(batch["image"], 3, prefix_ids=batch["input_ids"])
    assert answer[:, 0].tolist() == batch["answer_ids"][:, 1].tolist()  # the colour word
    assert answer[:, 1].tolist() == [cfg.text.sep_id] * 8  # then the end
    assert before.tolist() != batch["answer_ids"][:, 1].tolist()


def test_box_head_learns_the_referents(make_batch):
    seed_everything(0)
    cfg = tiny_task("grounding")
    model = COPA(cfg)
    batch = make_batch(cfg, num=8)
    _train(model, batch, 150, 1e-3)
    with torch.no_grad():
        box, _ = model.ground(batch["image"], batch["input_ids"], batch["attention_mask"])
    assert (box_iou(box, batch["box"]).diagonal() >= 0.5).all()
