"""Run under ``torchrun --nproc_per_node 2`` by ``test_ddp.py``: two DDP training runs in one process group, each
rank writing what it saw to ``OUT/<run>-rank<R>.json``.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/jobs/ddp_worker.py SHARDS OUT POISON_STEP

Runs: ``straight`` trains 12 steps with a checkpoint at step 7 (its shards' epochs are a few steps long, so it
crosses epochs); its folder is copied to ``split`` as if it had stopped after step 7 (later checkpoint and metric
lines removed); ``resumed`` continues ``split`` to step 12. Per optimizer step a rank records the loader
epoch, the keys of its batch, whether the optimizer stepped, and a SHA-256 of its weights' bytes. At step
``POISON_STEP`` rank 1 alone reports a NaN loss, so the non-finite guard must skip that step on both ranks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import sys
from pathlib import Path

import torch

from model.presets import tiny
from model.trainer import TrainConfig, Trainer


def weights_sha(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def train(shards: str, out: Path, run: str, folder: str, poison_step: int) -> None:
    cfg = TrainConfig(
        shards=shards, out=str(out / folder), steps=12, batch_size=8, lr=1e-3,
        warmup_steps=2, num_workers=0, shuffle_buffer=20, log_every=1, vocab_size=300,
        progress=False, keep_checkpoints=0, threads=1, ckpt_every=7,
    )  # fmt: skip
    model_cfg = tiny()
    model_cfg = dataclasses.replace(model_cfg, vision=dataclasses.replace(model_cfg.vision, img_size=32, patch_size=8))
    trainer = Trainer(cfg, model_cfg)
    rank, record, current = trainer.dist.rank, [], {}
    forward_backward, optimizer_step = trainer.forward_backward, trainer.optimizer_step

    def recorded_forward_backward(batch, sync):
        current.update(step=trainer.step + 1, epoch=trainer.loader.epoch, keys=list(batch["keys"]))
        out = forward_backward(batch, sync)
        if rank == 1 and trainer.step + 1 == poison_step:
            out["loss"] = out["loss"] * math.nan
        return out

    def recorded_optimizer_step(loss):
        stepped, norm = optimizer_step(loss)
        record.append(current | {"stepped": stepped, "weights": weights_sha(trainer.model)})
        return stepped, norm

    trainer.forward_backward, trainer.optimizer_step = recorded_forward_backward, recorded_optimizer_step
    result = trainer.run()
    (out / f"{run}-rank{rank}.json").write_text(json.dumps({"steps": record, "result": result}))


def main(shards: str, out: str, poison_step: str) -> None:
    root = Path(out)
    train(shards, root, "straight", "straight", int(poison_step))
    if torch.distributed.get_rank() == 0:  # as if the run had stopped after its checkpoint at step 7
        shutil.copytree(root / "straight", root / "split")
        (root / "split" / "checkpoints" / "step-00000012.pt").unlink()
        metrics = root / "split" / "metrics.jsonl"
        lines = [ln for ln in metrics.read_text().splitlines() if json.loads(ln)["step"] <= 7]
        metrics.write_text("".join(ln + "\n" for ln in lines))
    torch.distributed.barrier()
    train(shards, root, "resumed", "split", int(poison_step))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
