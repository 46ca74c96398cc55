"""``copa bench gpu``: a clean skip without CUDA, the training half run on CPU, and its figures by hand."""

from __future__ import annotations

import pytest

from jobs.bench import gpu


def test_skips_cleanly_without_a_gpu(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(gpu, "cuda_devices", lambda: 0)
    assert gpu.main(["--out", str(tmp_path / "gpu")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("copa bench gpu: skipped:") and "sees no CUDA device" in out
    assert not (tmp_path / "gpu").exists()  # nothing generated, nothing trained


def test_summary_rates_come_from_the_windows_after_the_warm_up():
    lines = [
        {"samples_per_s": 10.0, "data_wait_frac": 0.9, "loss": 9.0, "peak_mem_gib": 30.0, "skipped_steps": 0},
        {"samples_per_s": 100.0, "data_wait_frac": 0.1, "loss": 7.0, "peak_mem_gib": 31.0, "skipped_steps": 0},
        {"samples_per_s": 300.0, "data_wait_frac": 0.3, "loss": 6.0, "peak_mem_gib": 30.5, "skipped_steps": 1,
         "itc_candidates": 256.0},
    ]  # fmt: skip
    s = gpu.train_summary(lines, devices=2)
    assert s["samples_per_s_per_gpu"] == pytest.approx((100 + 300) / 2 / 2)
    assert s["data_wait_frac"] == pytest.approx(0.2)
    assert (s["peak_mem_gib"], s["loss_first"], s["loss_last"], s["skipped_steps"]) == (31.0, 9.0, 6.0, 1)
    with pytest.raises(ValueError, match="single window"):
        gpu.train_summary(lines[:1], devices=1)


@pytest.mark.slow
def test_the_training_half_runs_and_reports_on_cpu(small_corpus, tmp_path):
    """The GPU check's torchrun command and metrics, with the tiny preset on CPU instead of base on CUDA."""
    args = gpu.parse_args(
        ["--preset", "tiny", "--steps", "4", "--log-every", "2", "--batch-size", "8", "--workers", "0"]
    )
    lines = gpu.train_run(args, small_corpus, tmp_path / "run", devices=1, device="cpu")
    assert [ln["step"] for ln in lines] == [2, 4]
    s = gpu.train_summary(lines, devices=1)
    assert s["samples_per_s_per_gpu"] > 0 and 0.0 <= s["data_wait_frac"] < 1.0 and s["itc_candidates"] == 8
    text = "\n".join(gpu.train_lines(s, "tiny", 8))
    assert "samples/s per GPU" in text and "waiting for data" in text
