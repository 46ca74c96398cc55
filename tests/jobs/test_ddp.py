"""DDP with two gloo processes on CPU, long enough to cross epochs with unequal shards (``ddp_worker.py`` records
what each rank saw): disjoint samples, identical weights, epochs that change together, the non-finite skip on every
rank, and an exact resume under two ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BATCH, POISON_STEP = 8, 9  # as in ddp_worker.py; step 9 is after the resume point (7)


def shard_keys(root: Path) -> dict[str, set[str]]:
    keys = {}
    for path in sorted(root.glob("*.tar")):
        with tarfile.open(path) as tar:
            keys[path.name] = {m.name.split(".", 1)[0] for m in tar.getmembers()}
    return keys


@pytest.fixture(scope="module")
def ranks(small_corpus, tmp_path_factory) -> tuple[Path, dict[str, list[dict]]]:
    out = tmp_path_factory.mktemp("ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(REPO / "tests" / "jobs" / "ddp_worker.py"), str(small_corpus), str(out), str(POISON_STEP)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    runs = {}
    for run in ("straight", "resumed"):
        runs[run] = [json.loads((out / f"{run}-rank{r}.json").read_text()) for r in (0, 1)]
    return out, runs


def test_ranks_read_disjoint_samples_and_change_epoch_together(small_corpus, ranks):
    shards = shard_keys(small_corpus)
    sizes = sorted(len(k) for k in shards.values())
    assert len(sizes) == 2 and sizes[0] < sizes[1]  # unequal shards: the smaller one decides the epoch
    steps = [r["steps"] for r in ranks[1]["straight"]]
    assert [s["step"] for s in steps[0]] == [s["step"] for s in steps[1]] == list(range(1, 13))
    epochs = [s["epoch"] for s in steps[0]]
    assert epochs == [s["epoch"] for s in steps[1]]  # every rank changes epoch at the same step
    per_epoch = sizes[0] // BATCH  # full batches in the smaller shard
    assert epochs == [step // per_epoch for step in range(12)]
    for epoch in range(12 // per_epoch):  # the complete epochs
        seen = [[k for s in rank if s["epoch"] == epoch for k in s["keys"]] for rank in steps]
        assert all(len(keys) == len(set(keys)) == per_epoch * BATCH for keys in seen)  # no sample twice
        assert not set(seen[0]) & set(seen[1])  # disjoint across ranks
        owners = [[name for name, keys in shards.items() if set(rank_keys) <= keys] for rank_keys in seen]
        assert sorted(len(o) for o in owners) == [1, 1] and owners[0] != owners[1]  # each rank reads its own shard
        # The union is the epoch less what no rank can batch in step with the others: the smaller shard's last
        # partial batch (drop_last) and the bigger shard's samples past the smaller one's last full batch.
        small = min(shards.values(), key=len)
        assert len(small - set(seen[0]) - set(seen[1])) == len(small) % BATCH


def test_weights_stay_identical_and_a_non_finite_step_is_skipped_on_every_rank(ranks):
    steps = [r["steps"] for r in ranks[1]["straight"]]
    assert [s["weights"] for s in steps[0]] == [s["weights"] for s in steps[1]]
    stepped = [[s["stepped"] for s in rank] for rank in steps]
    assert stepped[0] == stepped[1] == [step != POISON_STEP for step in range(1, 13)]  # rank 1 alone saw the NaN
    weights = [s["weights"] for s in steps[0]]
    assert weights[POISON_STEP - 1] == weights[POISON_STEP - 2] != weights[POISON_STEP]  # skipped, then trained on
    results = [r["result"] for r in ranks[1]["straight"]]
    assert [r["skipped_steps"] for r in results] == [1, 1]


def test_resume_under_two_ranks_gives_the_uninterrupted_run(ranks):
    out, runs = ranks
    for rank in (0, 1):
        straight, resumed = (runs[run][rank]["steps"] for run in ("straight", "resumed"))
        assert [s["step"] for s in resumed] == list(range(8, 13))
        assert resumed == straight[7:]  # keys, epochs, the skipped step and the weights, step by step
    metrics = [(out / run / "metrics.jsonl").read_text().splitlines() for run in ("straight", "split")]
    drop = ("samples_per_s", "data_wait_frac")  # wall time
    lines = [[{k: v for k, v in json.loads(ln).items() if k not in drop} for ln in m] for m in metrics]
    assert [ln["step"] for ln in lines[1]] == list(range(1, 13))  # 8-12 written by the resumed run
    assert "loss" not in lines[1][POISON_STEP - 1]  # the skipped step has no losses to average
    assert lines[0] == lines[1]
