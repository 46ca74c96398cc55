"""Checkpoint files: only tensors and plain containers are ever loaded, and old checkpoints are pruned."""

import pytest
import torch

from model.checkpoint import checkpoint_path, list_checkpoints, load_checkpoint, save_checkpoint


class _Payload:
    """Pickles as a call that creates a file: what loading an untrusted checkpoint must never run."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_holding_a_pickle_payload_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "step": 1, "config": {}, "tokenizer": "", "extra": _Payload(str(marker))}, path)
    with pytest.raises(ValueError, match=r"evil\.pt: refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_plain_checkpoints_load_and_keep_prunes_the_oldest(tmp_path):
    state = {"model": {"w": torch.ones(2)}, "step": 0, "config": {}, "tokenizer": "{}"}
    for step in range(1, 6):
        save_checkpoint(checkpoint_path(tmp_path, step), {**state, "step": step}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000004.pt", "step-00000005.pt"]
    loaded = load_checkpoint(tmp_path)  # a run folder: its newest
    assert loaded["step"] == 5 and torch.equal(loaded["model"]["w"], torch.ones(2))
