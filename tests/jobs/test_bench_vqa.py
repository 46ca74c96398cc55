"""``copa bench vqa``: counted GFLOPs per question fall with the keep ratio and match a count of one answer by hand."""

import json

import pytest
import torch

from jobs.bench import vqa
from model.copa import COPA
from model.cost import count
from model.presets import tiny
from model.utils import seed_everything


def test_vqa_bench_counts_each_setting_against_keep_one(tmp_path, capsys):
    out = tmp_path / "vqa.json"
    args = ["--preset", "tiny", "--image-size", "64", "--detect-layers", "1", "2", "--keep-ratios", "1.0,0.5",
            "--questions", "4", "--batch-size", "2", "--threads", "1", "--out", str(out)]  # fmt: skip
    assert vqa.main(args) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["detect_layers"], r["keep_ratio"]) for r in rows] == [([1], 1.0), ([1], 0.5), ([2], 0.5)]
    full, early, late = (r["gflops_per_question"] for r in rows)
    assert early < late < full  # pruning before block 1 saves more than before block 2
    assert rows[0]["flops_vs_full"] == 1.0 and rows[1]["flops_vs_full"] == pytest.approx(early / full)
    # the same answer counted by hand: a fresh model of the same preset and seed, detector before block 1, keep 0.5
    seed_everything(0)
    cfg = tiny()
    model = COPA(type(cfg)(**{**vars(cfg), "vision": type(cfg.vision)(**{**vars(cfg.vision), "img_size": 64})}))
    model.eval().set_detection((1,), (0.5,))
    ids = torch.tensor([[cfg.text.cls_id, *range(10, 20), cfg.text.sep_id]] * 2)
    with torch.no_grad():
        flops = count(lambda: model.generate(torch.zeros(2, 3, 64, 64), 3, prefix_ids=ids)).total_flops
    assert early == pytest.approx(flops / 2 / 1e9)
    assert "detect layer [2] keep 0.5" in capsys.readouterr().out
