"""Fixtures shared by the fine-tuning job tests (``test_finetune.py``, ``test_vqa_grounding.py``)."""

import pytest

from jobs import train
from tests.jobs.test_finetune import TINY


@pytest.fixture(scope="session")
def pretrained(small_corpus, tmp_path_factory):
    """A tiny model pretrained for two steps at 32 px."""
    run = tmp_path_factory.mktemp("pretrained") / "run"
    args = ["--shards", str(small_corpus), "--out", str(run), "--preset", "tiny", "--vocab-size", "300", *TINY]
    assert train.main([*args, "--steps", "2", "--quiet"]) == 0
    return run
