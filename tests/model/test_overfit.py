"""A tiny COPA overfits 8 synthetic pairs: every one of the five losses drops clearly (a learning check, no timing)."""

import pytest
import torch

from model.copa import COPA
from model.presets import tiny
from model.utils import seed_everything

LOSSES = ("loss_itc", "loss_itm", "loss_mlm", "loss_prefixlm", "loss_pta")


@pytest.mark.slow
def test_tiny_model_overfits_a_fixed_batch(make_batch):
    seed_everything(0)
    cfg = tiny()
    model = COPA(cfg)
    batch = make_batch(cfg, num=8, labelled=6)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    history = {k: [] for k in LOSSES}
    for _ in range(450):  # ITM memorizes the 8 pairs late: its loss drops between steps 250 and 400
        out = model(batch)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        for k in LOSSES:
            history[k].append(out[k].item())

    def mean(values):
        return sum(values) / len(values)

    first = {k: mean(v[:10]) for k, v in history.items()}
    last = {k: mean(v[-20:]) for k, v in history.items()}
    report = {k: (round(first[k], 3), round(last[k], 3)) for k in LOSSES}
    # Loose bounds with a meaning: ITC from chance (ln 8 = 2.08) to clearly matched; ITM from chance (0.64 for one
    # positive per two negatives) to mostly right; MLM/PrefixLM from ~ln(500) = 6.2 to a few nats; PTA from 0.69 to
    # a detector that finds the square (a quarter of the patches).
    assert last["loss_itc"] < 0.5, report
    assert last["loss_itm"] < 0.5 * first["loss_itm"], report
    assert last["loss_mlm"] < 0.5 * first["loss_mlm"], report
    assert last["loss_prefixlm"] < 0.3 * first["loss_prefixlm"], report
    assert last["loss_pta"] < 0.5 * first["loss_pta"], report
    model.eval()
    with torch.no_grad():
        det = model.detect(batch["image"], batch["input_ids"], batch["attention_mask"])
        positive = batch["coverage"].flatten(1) > 0
        kept = torch.zeros_like(positive).scatter_(1, det.kept_idx[0], True)
    recall = (kept & positive).sum() / positive.sum()
    assert recall > 0.9, f"kept patches should cover the square, recall {recall:.2f}; {report}"
