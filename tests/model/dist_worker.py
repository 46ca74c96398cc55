"""Run under ``torchrun --nproc_per_node 2`` by ``test_distributed.py``: the ``tiny`` COPA wrapped in DDP (gloo),
each rank holding half of one fixed batch, writing what it computed to ``OUT/<case>-rank<R>.pt``.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/model/dist_worker.py OUT

Cases (``CASES``; the test builds the same models in one process to compare):
- ``global`` / ``per_rank``: ITC alone (the other loss weights 0) with ``itc_global_batch`` on / off: the rank's
  ITC loss and its parameter gradients after DDP's average;
- ``momentum``: the same with the momentum encoders and a queue;
- ``queue``: three optimizer steps with the queue, each rank on its own batches: the queue contents;
- ``global_negatives``: every loss, ITM negatives from both ranks (``itm_negative_pool="global"``).

Rank 1's captions carry extra padding columns, so the ranks gather text tensors of different lengths.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from model.config import COPAConfig, LossConfig
from model.copa import COPA
from model.presets import tiny
from model.trainer import wrap_ddp
from model.utils import seed_everything
from tests.model.conftest import synthetic_batch

B = 4  # pairs per rank; the one-process reference holds 2 * B
ITC_ONLY = {"w_itm": 0.0, "w_mlm": 0.0, "w_prefixlm": 0.0, "w_pta": 0.0}
CASES = {
    "global": ({**ITC_ONLY}, {}),
    "per_rank": ({**ITC_ONLY, "itc_global_batch": False}, {}),
    "momentum": ({**ITC_ONLY, "itc_queue_size": 16}, {}),
    "queue": ({"itc_queue_size": 32}, {}),
    "global_negatives": ({}, {"itm_negative_pool": "global"}),
}


def case_config(case: str) -> COPAConfig:
    loss, model = CASES[case]
    cfg = tiny()
    return dataclasses.replace(cfg, loss=LossConfig(**loss), **model)


def rank_batch(cfg: COPAConfig, rank: int, seed: int = 0) -> dict:
    """Rank ``rank``'s half of ``synthetic_batch(cfg, 2 * B)``; rank 1's captions padded by 3 more columns."""
    full = synthetic_batch(cfg, 2 * B, labelled=2 * B - 1, seed=seed)
    half = {k: v[rank * B : (rank + 1) * B] for k, v in full.items()}
    if rank == 1:
        pad = torch.full((B, 3), cfg.text.pad_id, dtype=torch.long)
        half["input_ids"] = torch.cat([half["input_ids"], pad], dim=1)
        half["attention_mask"] = torch.cat([half["attention_mask"], torch.zeros_like(pad)], dim=1)
    return half


def gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def one_step(case: str, rank: int) -> dict:
    cfg = case_config(case)
    seed_everything(0)  # the same initial weights and queue on both ranks (and in the test's reference)
    model = COPA(cfg)
    ddp = wrap_ddp(model)  # as the trainer wraps it
    out = ddp(rank_batch(cfg, rank))
    out["loss"].backward()
    return {"out": {k: v.detach() for k, v in out.items()}, "grads": gradients(model)}


def queue_steps(rank: int) -> dict:
    cfg = case_config("queue")
    seed_everything(0)
    model = COPA(cfg)
    ddp = wrap_ddp(model)  # as the trainer wraps it
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    seed_everything(100 + rank)  # the ranks draw different masks and negatives, as in training
    for step in range(3):
        ddp(rank_batch(cfg, rank, seed=step))["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
    m = model.momentum
    return {"image_queue": m.image_queue.clone(), "text_queue": m.text_queue.clone(), "ptr": m.queue_ptr.clone()}


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)
    for case in CASES:
        result = queue_steps(rank) if case == "queue" else one_step(case, rank)
        torch.save(result, Path(out) / f"{case}-rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
