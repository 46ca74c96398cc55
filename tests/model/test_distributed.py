"""Contrastive learning over the global batch under DDP: two gloo processes holding B pairs each (``dist_worker.py``)
against one process holding the same 2B pairs, built here from the same seed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model.copa import COPA
from model.utils import seed_everything
from tests.model.conftest import synthetic_batch
from tests.model.dist_worker import CASES, B, case_config, gradients, rank_batch

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> dict[str, list[dict]]:
    out = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(REPO / "tests" / "model" / "dist_worker.py"), str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {case: [torch.load(out / f"{case}-rank{r}.pt") for r in (0, 1)] for case in CASES}


def one_process(case: str) -> dict:
    """The reference: one process, the 2B pairs in one batch."""
    cfg = case_config(case)
    seed_everything(0)
    model = COPA(cfg)
    out = model(synthetic_batch(cfg, 2 * B, labelled=2 * B - 1))
    out["loss"].backward()
    return {"out": out, "grads": gradients(model)}


@pytest.mark.parametrize("case", ["global", "momentum"])
def test_two_ranks_give_the_itc_loss_and_gradients_of_one_process_with_both_batches(ranks, case):
    ref = one_process(case)
    rank_losses = [r["out"]["loss_itc"] for r in ranks[case]]
    torch.testing.assert_close((rank_losses[0] + rank_losses[1]) / 2, ref["out"]["loss_itc"].detach())
    assert [r["out"]["itc_candidates"].item() for r in ranks[case]] == [2 * B, 2 * B]
    for rank in ranks[case]:  # DDP's average of the ranks' gradients is the one-process gradient
        assert rank["grads"].keys() == ref["grads"].keys()
        for name, grad in ref["grads"].items():
            torch.testing.assert_close(rank["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_per_rank_itc_is_a_different_loss(ranks):
    """What the gathered path must not fall back to: each rank contrasting its own B pairs."""
    ref = one_process("global")
    per_rank = [r["out"] for r in ranks["per_rank"]]
    assert abs((per_rank[0]["loss_itc"] + per_rank[1]["loss_itc"]) / 2 - ref["out"]["loss_itc"]) > 0.05
    assert [o["itc_candidates"].item() for o in per_rank] == [B, B]
    differs = [not torch.allclose(ranks["per_rank"][0]["grads"][n], g, atol=1e-4) for n, g in ref["grads"].items()]
    assert sum(differs) > len(differs) // 2


def test_momentum_queues_stay_identical_on_every_rank_and_hold_both_ranks_features(ranks):
    queues = ranks["queue"]
    for name in ("image_queue", "text_queue", "ptr"):
        assert torch.equal(queues[0][name], queues[1][name]), name  # DDP does not broadcast them: the gather does
    assert queues[0]["ptr"].item() == 3 * 2 * B  # three steps of both ranks' pairs
    # The first step's columns are the momentum towers' features of both ranks' batches, rank 0 first; at step 1
    # the momentum towers still equal the initial online towers.
    cfg = case_config("queue")
    seed_everything(0)
    model = COPA(cfg).eval()
    with torch.no_grad():
        batches = [rank_batch(cfg, r, seed=0) for r in (0, 1)]
        image = torch.cat([model.encode_image(b["image"]) for b in batches])
        text = torch.cat([model.encode_text(b["input_ids"], b["attention_mask"]) for b in batches])
    torch.testing.assert_close(queues[0]["image_queue"][:, : 2 * B].t(), image, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(queues[0]["text_queue"][:, : 2 * B].t(), text, rtol=1e-4, atol=1e-5)


def test_global_itm_negatives_come_from_both_ranks_and_train(ranks):
    outs = [r["out"] for r in ranks["global_negatives"]]
    assert all(torch.isfinite(o["loss"]) for o in outs)
    assert all(0.0 < o["itm_negatives_from_other_ranks"].item() <= 1.0 for o in outs)
    grads = ranks["global_negatives"][0]["grads"]
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert grads["itm_head.weight"].abs().sum() > 0
