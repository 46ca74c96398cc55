"""The trainer on real packed shards: exact resume, the non-finite guard, refused resumes, and learning."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
from collections.abc import Iterator

import pytest
import torch

from model.checkpoint import list_checkpoints, load_checkpoint, load_model
from model.evaluate import evaluate
from model.presets import tiny
from model.trainer import TrainConfig, Trainer, lr_factor, split_holdout


def tiny_at(img_size: int = 32, patch_size: int = 8):
    cfg = tiny()
    return dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, img_size=img_size, patch_size=patch_size))


def train_config(shards, out, **kw) -> TrainConfig:
    base = dict(
        shards=str(shards), out=str(out), steps=4, batch_size=8, lr=1e-3, warmup_steps=2, num_workers=0,
        shuffle_buffer=20, log_every=1, ckpt_every=100, vocab_size=300, progress=False, keep_checkpoints=0,
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


def run(cfg: TrainConfig, model_cfg=None) -> dict:
    trainer = Trainer(cfg, model_cfg or tiny_at())
    try:
        return trainer.run()
    finally:
        trainer.close()


def losses(out) -> list[tuple[int, float, float]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["loss_pta"]) for r in rows]


def test_lr_warms_up_then_follows_a_cosine_to_the_floor():
    assert lr_factor(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100, 0.1) == pytest.approx(0.55)
    assert lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_gives_the_losses_of_an_uninterrupted_run(small_corpus, tmp_path, num_workers):
    # 80 training samples in batches of 8, epochs of about 10 steps: the 14 steps cross an epoch boundary after the
    # checkpoint at step 6, with augmentation, the shuffle buffer, MLM masking and ITM negatives all drawing randoms.
    kw = dict(num_workers=num_workers, augment=True, ckpt_every=6)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run(train_config(small_corpus, straight, steps=14, **kw))
    assert [p.name for p in list_checkpoints(straight)] == ["step-00000006.pt", "step-00000012.pt", "step-00000014.pt"]
    shutil.copytree(straight, resumed)
    for later in list_checkpoints(resumed)[1:]:
        later.unlink()  # as if the run had stopped after its checkpoint at step 6 ...
    metrics = resumed / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("".join(ln + "\n" for ln in lines if json.loads(ln)["step"] <= 6))  # ... and logged no more
    run(train_config(small_corpus, resumed, steps=14, **kw))
    assert losses(resumed) == losses(straight)
    assert [s for s, _, _ in losses(resumed)] == list(range(1, 15))  # lines past the checkpoint were replaced
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["loader"] == b["loader"] and a["step"] == b["step"] == 14


def test_resume_refuses_settings_that_change_the_computation(small_corpus, tmp_path):
    run(train_config(small_corpus, tmp_path, steps=1))
    with pytest.raises(ValueError, match=r"train\.lr"):
        Trainer(train_config(small_corpus, tmp_path, steps=2, lr=5e-4), tiny_at())
    with pytest.raises(ValueError, match=r"model\.vision"):
        Trainer(train_config(small_corpus, tmp_path, steps=2), tiny_at(img_size=64))


def test_non_finite_steps_are_skipped_and_too_many_stop_the_run(small_corpus, tmp_path, monkeypatch):
    trainer = Trainer(train_config(small_corpus, tmp_path / "a", steps=3, max_nonfinite=2), tiny_at())
    forward, calls = trainer.model.forward, []

    def poisoned(batch):
        out = forward(batch)
        calls.append(1)
        return out | {"loss": out["loss"] * math.nan} if len(calls) == 2 else out

    monkeypatch.setattr(trainer.model, "forward", poisoned)
    result = trainer.run()
    assert result["skipped_steps"] == 1 and result["steps"] == 3
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())

    trainer = Trainer(train_config(small_corpus, tmp_path / "b", steps=5, max_nonfinite=2), tiny_at())
    forward = trainer.model.forward

    def diverged(batch):
        out = forward(batch)
        return out | {"loss": out["loss"] * math.inf}

    monkeypatch.setattr(trainer.model, "forward", diverged)
    with pytest.raises(RuntimeError, match="2 steps in a row"):
        trainer.run()


def test_holdout_leaves_the_last_shards_out(small_corpus):
    train, held = split_holdout(str(small_corpus), 1)
    assert [u.rsplit("/", 1)[1] for u in train] == ["000000.tar"] and held[0].endswith("000001.tar")
    with pytest.raises(ValueError, match="holdout_shards 2 leaves no training shard"):
        split_holdout(str(small_corpus), 2)


@contextlib.contextmanager
def linear_outputs() -> Iterator[list[torch.Tensor]]:
    """The outputs of every ``nn.Linear`` called inside the block (shapes only: dtype and device)."""
    seen = []

    def hook(module, args, output):
        if isinstance(module, torch.nn.Linear):
            seen.append(torch.empty(0, dtype=output.dtype, device=output.device))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


@pytest.mark.slow
@pytest.mark.parametrize("precision, steps", [("fp32", 300), ("bf16", 100)])
def test_the_detector_learns_where_the_named_objects_are(learning_corpus, tmp_path, precision, steps):
    """PTA loss falls and recall of the kept patches at keep 0.5 goes from chance (0.5) to above 0.7 (~40 s), in
    fp32 and under bf16 autocast on the CPU, whose matmuls really run in bf16 (fewer steps: a CPU without bf16
    instructions runs them 4x slower; 120 bf16 steps reached recall 0.88)."""
    model_cfg = tiny_at(img_size=64, patch_size=8)  # an 8 x 8 grid, as the corpus' stored labels
    cfg = train_config(learning_corpus, tmp_path, steps=steps, batch_size=16, warmup_steps=20, holdout_shards=1,
                       log_every=steps // 6, shuffle_buffer=100, vocab_size=500, precision=precision)  # fmt: skip
    held_out = split_holdout(str(learning_corpus), 1)[1]
    with linear_outputs() as outputs:
        run(cfg, model_cfg)
    assert {t.dtype for t in outputs} == {torch.bfloat16 if precision == "bf16" else torch.float32}
    trained, tokenizer = load_model(load_checkpoint(tmp_path))
    untrained = type(trained)(trained.cfg).eval()
    before, _ = evaluate(untrained, tokenizer, held_out, (0.5,), num_captions=0, num_examples=0)
    after, _ = evaluate(trained, tokenizer, held_out, (0.5,), num_captions=0, num_examples=0)
    assert before["detector"][0]["pairs"] >= 100
    assert before["detector"][0]["recall"] < 0.65
    assert after["detector"][0]["recall"] > 0.7
    pta = [p for _, _, p in losses(tmp_path)]
    assert pta[-1] < 0.8 * pta[0]


def _per_sample_loss(model):
    """A loss that is a mean over samples (COPA's contrastive losses are not), through real parameters."""

    def forward(batch):
        cls = model.vision.forward_shared(batch["image"])[:, 0]
        return {"loss": model.itc_vision_proj(cls).pow(2).sum(dim=1).mean()}

    return forward


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradient_accumulation_equals_the_large_batch(small_corpus, tmp_path, monkeypatch):
    trainer = Trainer(train_config(small_corpus, tmp_path, batch_size=8, accum=2), tiny_at())
    try:
        monkeypatch.setattr(trainer.model, "forward", _per_sample_loss(trainer.model))
        batch = next(iter(trainer.loader))
        halves = [
            {k: v[s] for k, v in batch.items() if isinstance(v, torch.Tensor)} for s in (slice(0, 4), slice(4, 8))
        ]
        trainer.forward_backward(halves[0], sync=False)
        trainer.forward_backward(halves[1], sync=True)
        accumulated = _grads(trainer.model)
        trainer.model.zero_grad(set_to_none=True)
        trainer.cfg = dataclasses.replace(trainer.cfg, accum=1)
        trainer.forward_backward(batch, sync=True)
        full = _grads(trainer.model)
    finally:
        trainer.close()
    assert accumulated.keys() == full.keys() and len(full) > 10
    for name, grad in full.items():
        torch.testing.assert_close(accumulated[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_clipping_scales_the_gradient_to_the_limit_and_a_non_finite_norm_skips_the_step(
    small_corpus, tmp_path, monkeypatch
):
    trainer = Trainer(train_config(small_corpus, tmp_path, clip_grad=0.5), tiny_at())
    try:
        params = [p for p in trainer.model.parameters()]
        for p in params:
            p.grad = torch.full_like(p, 0.01)
        expected = 0.01 * math.sqrt(sum(p.numel() for p in params))  # the norm of the unclipped gradient
        seen = []
        step = trainer.optimizer.step
        monkeypatch.setattr(trainer.optimizer, "step", lambda: seen.append(_norm(params)) or step())
        stepped, norm = trainer.optimizer_step(torch.tensor(1.0))
        assert stepped and norm == pytest.approx(expected, rel=1e-5)
        assert seen == [pytest.approx(0.5, rel=1e-4)]  # the optimizer saw the clipped gradient

        before = [p.detach().clone() for p in params]
        for p in params:
            p.grad = torch.full_like(p, 0.01)
        params[-1].grad.view(-1)[0] = math.inf
        stepped, norm = trainer.optimizer_step(torch.tensor(1.0))  # a finite loss, a non-finite gradient norm
        assert not stepped and not math.isfinite(norm) and len(seen) == 1
        assert all(torch.equal(a, b) for a, b in zip(before, params, strict=True))
        assert all(p.grad is None for p in params)
    finally:
        trainer.close()


def _norm(params) -> float:
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))


@pytest.mark.gpu
def test_on_cuda_the_model_and_batches_live_on_the_gpu_in_bf16(small_corpus, tmp_path):
    trainer = Trainer(train_config(small_corpus, tmp_path, steps=3, device="cuda"), tiny_at())  # precision auto
    try:
        assert trainer.bf16 and trainer.dist.device.type == "cuda"
        assert all(p.device.type == "cuda" for p in trainer.model.parameters())
        with linear_outputs() as outputs:
            result = trainer.run()
    finally:
        trainer.close()
    assert {(t.dtype, t.device.type) for t in outputs} == {(torch.bfloat16, "cuda")}
    assert result["steps"] == 3 and result["skipped_steps"] == 0 and math.isfinite(result["loss"])


@pytest.mark.gpu
def test_a_checkpoint_trained_on_cuda_scores_the_same_on_the_cpu(small_corpus, tmp_path):
    run(train_config(small_corpus, tmp_path, steps=2, device="cuda", precision="fp32"))
    model, tokenizer = load_model(load_checkpoint(tmp_path))
    held_out = split_holdout(str(small_corpus), 1)[1]
    on_cpu, _ = evaluate(model.cpu().eval(), tokenizer, held_out, (0.5,), num_captions=0, num_examples=0)
    on_gpu, _ = evaluate(model.cuda(), tokenizer, held_out, (0.5,), num_captions=0, num_examples=0, device="cuda")
    assert on_gpu["detector"][0]["recall"] == pytest.approx(on_cpu["detector"][0]["recall"], abs=0.02)
    for direction in ("text_to_image", "image_to_text"):
        assert on_gpu["retrieval"][direction] == pytest.approx(on_cpu["retrieval"][direction], abs=0.05)
