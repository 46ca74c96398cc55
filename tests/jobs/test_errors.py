"""One error contract for every job: a missing, unreadable or malformed input file, or a bad setting, gives one line
on stderr that names the file or the setting, and exit status 2; a programming error keeps its traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from jobs import demo, evaluate, ingest, pack, synth, train
from jobs import inspect as inspect_job
from jobs.bench import runner as bench

TINY = ["--preset", "tiny", "--batch-size", "8", "--workers", "0", "--vocab-size", "300", "--threads", "1"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("errors") / "corpus"
    assert synth.main(["--out", str(out), "--images", "60"]) == 0
    return out


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def refused(capsys, job: str, code: int, named: str) -> None:
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"copa {job}: ") and named in last, err


def test_ingest_names_a_truncated_annotation_file_and_a_bad_source(corpus, tmp_path, capsys):
    copy = tmp_path / "corpus"
    shutil.copytree(corpus, copy)
    bad = truncate(copy / "coco" / "annotations" / "captions_train2017.json")
    code = ingest.main(["--config", str(copy / "sources.yaml"), "--out", str(tmp_path / "s.parquet"), "--quiet"])
    refused(capsys, "ingest", code, str(bad))
    (tmp_path / "bad.yaml").write_text("sources:\n- name: [oops\n")
    refused(capsys, "ingest", ingest.main(["--config", str(tmp_path / "bad.yaml"), "--out", "x"]), "bad.yaml")
    (tmp_path / "fmt.yaml").write_text("sources:\n- {name: x, format: nope, annotations: a.json, images: im}\n")
    code = ingest.main(["--config", str(tmp_path / "fmt.yaml"), "--out", "x"])
    refused(capsys, "ingest", code, "unknown format 'nope'")


def test_ingest_lets_a_programming_error_raise(corpus, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("a bug, not a bad input")

    monkeypatch.setattr(ingest, "ingest", broken)
    with pytest.raises(KeyError, match="a bug"):
        ingest.main(["--config", str(corpus / "sources.yaml"), "--out", str(tmp_path / "s.parquet"), "--quiet"])


def test_pack_names_a_file_that_is_not_parquet_and_a_bad_setting(tmp_path, capsys):
    source = tmp_path / "source.parquet"
    source.write_bytes(b"not parquet at all")
    refused(capsys, "pack", pack.main(["--source", str(source), "--out", str(tmp_path / "p")]), str(source))
    code = pack.main(["--source", str(source), "--out", str(tmp_path / "p"), "--samples-per-shard", "0"])
    refused(capsys, "pack", code, "samples_per_shard")


def test_train_names_a_malformed_sizes_file_and_a_bad_setting(small_corpus, tmp_path, capsys):
    shards = tmp_path / "shards"
    shutil.copytree(small_corpus, shards)
    sizes = truncate(shards / "sizes.json")
    code = train.main(["--shards", str(shards), "--out", str(tmp_path / "run"), *TINY, "--steps", "1"])
    refused(capsys, "train", code, str(sizes))
    code = train.main(["--shards", str(small_corpus), "--out", str(tmp_path / "run"), *TINY, "--accum", "0"])
    refused(capsys, "train", code, "TrainConfig.accum")


def test_evaluate_names_a_truncated_checkpoint_and_a_bad_setting(small_corpus, tmp_path, capsys):
    bad = tmp_path / "step-00000001.pt"
    bad.write_bytes(b"PK\x03\x04 half a zip")
    refused(capsys, "evaluate", evaluate.main(["--checkpoint", str(bad)]), str(bad))
    run = tmp_path / "run"
    assert train.main(["--shards", str(small_corpus), "--out", str(run), *TINY, "--steps", "1", "--quiet"]) == 0
    checkpoint = next((run / "checkpoints").glob("*.pt"))
    shutil.copy(checkpoint, bad)
    refused(capsys, "evaluate", evaluate.main(["--checkpoint", str(truncate(bad))]), str(bad))
    code = evaluate.main(["--checkpoint", str(run), "--shards", str(small_corpus), "--keep-ratios", "0.5,1.5"])
    refused(capsys, "evaluate", code, "--keep-ratios")


def test_inspect_names_a_truncated_manifest(small_corpus, tmp_path, capsys):
    shards = tmp_path / "shards"
    shutil.copytree(small_corpus, shards)
    manifest = truncate(shards / "000001.parquet")
    refused(capsys, "inspect", inspect_job.main([str(shards)]), str(manifest))
    refused(capsys, "inspect", inspect_job.main([str(shards), "--where", "status != 'ok'"]), str(manifest))


def test_synth_demo_and_bench_name_a_bad_setting(tmp_path, capsys):
    for job, main in (("synth", synth.main), ("demo", demo.main)):
        with pytest.raises(SystemExit) as exit_:  # argparse's own way: usage, then one error line
            main(["--out", str(tmp_path / job), "--images", "-5"])
        refused(capsys, "synth", exit_.value.code, "SynthConfig.num_images")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    refused(capsys, "synth", synth.main(["--out", str(tmp_path / "mine"), "--images", "60"]), "is not empty")
    refused(capsys, "bench", bench.main(["labels", "--grid", "-1"]), "grid must be positive")
    refused(capsys, "demo", demo.main(["--out", str(tmp_path / "demo"), "--steps", "0"]), "--steps must be at least 1")
    assert not (tmp_path / "demo").exists()  # refused before anything is generated
