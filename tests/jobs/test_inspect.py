"""``copa inspect``: the summary equals figures computed independently from the shards themselves."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from jobs import inspect
from manifests.samples import decode_pta


def from_the_shards(root) -> dict:
    """Per source: samples and image bytes; per caption: relevant boxes and positive-patch fraction (pta > 0)."""
    sources, relevant, fractions, captions_per_image = {}, [], [], []
    urls = sorted(str(p) for p in root.glob("*.tar"))
    for sample in wds.WebDataset(urls, shardshuffle=False):
        meta = json.loads(sample["json"])
        entry = sources.setdefault(meta["source"], [0, 0])
        entry[0] += 1
        entry[1] += len(sample["jpg"])
        captions_per_image.append(len(meta["captions"]))
        pta = decode_pta(sample["pta.npy"])
        for c, rel in enumerate(meta["relevant"]):
            relevant.append(len(rel["boxes"]))
            if rel["boxes"]:
                fractions.append(float((pta[c] > 0).mean()))
    return {"sources": sources, "relevant": relevant, "fractions": fractions, "per_image": captions_per_image}


def test_summary_matches_the_shards(small_corpus, capsys):
    assert inspect.main([str(small_corpus), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    truth = from_the_shards(small_corpus)
    assert {k: [v["samples"], v["image_bytes"]] for k, v in summary["sources"].items()} == truth["sources"]
    assert summary["samples"] == sum(n for n, _ in truth["sources"].values())
    assert summary["captions"] == len(truth["relevant"])
    assert summary["grounded_caption_share"] == np.mean(np.array(truth["relevant"]) > 0)
    fractions = np.float32(truth["fractions"])
    median = summary["pos_fraction_of_grounded"]["p50"]  # to the 1e-4 bins of the streamed histogram
    assert np.mean(fractions < median) <= 0.5 <= np.mean(fractions < median + 1e-4)
    assert summary["pos_fraction_of_grounded"]["mean"] == pytest.approx(fractions.mean(), rel=1e-6)
    assert summary["captions_per_image"]["mean"] == np.mean(truth["per_image"])
    manifests = pq.read_table(sorted(small_corpus.glob("*.parquet")), columns=["status"]).to_pylist()
    assert summary["rejected"] == sum(r["status"] != "ok" for r in manifests)
    assert summary["geometry"] == {"image_size": 64, "patch_size": 8}
    assert [s["name"] for s in summary["shards"]] == ["000000.tar", "000001.tar"]
    assert inspect.main([str(small_corpus)]) == 0
    assert "name at least one box" in capsys.readouterr().out


def test_bad_input_is_named(small_corpus, tmp_path, capsys):
    assert inspect.main([str(tmp_path / "missing")]) == 2
    assert "no such dataset folder" in capsys.readouterr().err
    assert inspect.main([str(tmp_path)]) == 2
    assert "not a packed dataset" in capsys.readouterr().err
    copy = tmp_path / "copy"
    shutil.copytree(small_corpus, copy)
    info = json.loads((copy / "dataset.json").read_text())
    (copy / "dataset.json").write_text(json.dumps(info | {"schema_version": 99}))
    assert inspect.main([str(copy)]) == 2
    assert "schema version 99" in capsys.readouterr().err


def test_pictures_of_chosen_and_random_samples(small_corpus, tmp_path, capsys):
    from manifests.inspect import load_samples, sample_keys
    from manifests.pictures import COVER_COLOR, GAP

    def fully_covered(key: str) -> bool:  # caption 0 covers at least one patch entirely
        pta = load_samples(str(small_corpus), [key])[0].pta
        return pta is not None and bool((pta[0] == 255).any())

    key = next(k for k in sample_keys(str(small_corpus), 200, 0) if fully_covered(k))
    out = tmp_path / "pictures"
    assert inspect.main([str(small_corpus), "--show", key, "--sample", "2", "--seed", "1", "--out", str(out)]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert f"{key}.png" in written and "contact_sheet.png" in written and len(written) == 4
    sample = load_samples(str(small_corpus), [key])[0]
    panel = Image.open(out / f"{key}.png").convert("RGB")
    assert panel.height >= 256 and panel.width >= 2 * 256 + GAP
    # caption 0's overlay is the second tile; a fully covered patch is tinted towards the coverage colour there
    grid = sample.pta.shape[-1]
    rows, cols = np.nonzero(sample.pta[0] == 255)
    cell = 256 // grid
    x, y = int((cols[0] + 0.5) * cell), int((rows[0] + 0.5) * cell)
    plain = np.asarray(Image.open(io.BytesIO(sample.image)).convert("RGB").resize((256, 256)), dtype=float)[y, x]
    tinted = np.asarray(panel, dtype=float)[y, 256 + GAP + x]
    target = np.asarray(COVER_COLOR, dtype=float)
    assert np.abs(tinted - target).sum() < np.abs(plain - target).sum() - 30
    assert inspect.main([str(small_corpus), "--show", "coco-nope"]) == 2
    assert "no sample 'coco-nope'" in capsys.readouterr().err


# --- queries -------------------------------------------------------------------------------------------------------


def manifest_rows(root) -> list[dict]:
    """Every manifest row, in manifest order (shard, then key), read with pyarrow alone."""
    return pq.read_table(sorted(root.glob("*.parquet"))).to_pylist()


CONDITIONS = {  # condition -> the same test in Python
    "source = 'vg' AND num_captions > 10": lambda r: r["source"] == "vg" and r["num_captions"] > 10,
    "list_max(pos_fraction) > 0.25": lambda r: max(r["pos_fraction"], default=0) > 0.25,
    "list_contains(num_relevant, 0) AND key LIKE 'coco-%'": lambda r: (
        0 in r["num_relevant"] and r["key"].startswith("coco-")
    ),
}


@pytest.mark.parametrize("condition", list(CONDITIONS))
def test_queries_return_the_rows_pyarrow_finds(small_corpus, tmp_path, condition):
    from manifests.query import DEFAULT_COLUMNS, query

    rows = manifest_rows(small_corpus)
    expected = [r for r in rows if CONDITIONS[condition](r)]
    assert 0 < len(expected) < len(rows)  # the condition selects something, not everything
    assert query(str(small_corpus), condition).to_pylist() == [{c: r[c] for c in DEFAULT_COLUMNS} for r in expected]
    columns = ["key", "captions", "image_bytes"]
    assert query(str(small_corpus), condition, columns, 2).to_pylist() == [
        {c: r[c] for c in columns} for r in expected[:2]
    ]

    out = tmp_path / "rows.parquet"
    assert inspect.main([str(small_corpus), "--where", condition, "--format", "parquet", "--output", str(out)]) == 0
    written = pq.read_table(out)
    assert written.to_pylist() == [{c: r[c] for c in DEFAULT_COLUMNS} for r in expected]
    assert (
        written.schema.field("pos_fraction").type
        == pq.read_schema(next(small_corpus.glob("*.parquet"))).field("pos_fraction").type
    )

    out = tmp_path / "rows.csv"
    args = [str(small_corpus), "--where", condition, "--columns", "key,num_captions,captions,pos_fraction"]
    assert inspect.main([*args, "--format", "csv", "--output", str(out)]) == 0
    with out.open(newline="") as f:
        back = list(csv.DictReader(f))
    assert [r["key"] for r in back] == [r["key"] for r in expected]
    assert [int(r["num_captions"]) for r in back] == [r["num_captions"] for r in expected]
    assert [json.loads(r["captions"]) for r in back] == [r["captions"] for r in expected]
    for got, want in zip(back, expected, strict=True):  # float32 values survive the JSON text exactly
        assert np.array_equal(np.float32(json.loads(got["pos_fraction"])), np.float32(want["pos_fraction"]))


def test_query_table_columns_and_limits(small_corpus, capsys):
    rows = manifest_rows(small_corpus)
    vg = [r for r in rows if r["source"] == "vg"]
    assert (
        inspect.main([str(small_corpus), "--where", "source = 'vg'", "--columns", "key,captions", "--limit", "3"]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["key", "captions"] and set(lines[1]) == {"-"}
    assert [line.split()[0] for line in lines[2:5]] == [r["key"] for r in vg[:3]]
    assert lines[2].endswith(f"... +{len(vg[0]['captions']) - 3}]")  # lists shown shortened
    assert lines[5].startswith("3 rows (the first 3") and len(lines) == 6
    assert inspect.main([str(small_corpus), "--where", "true"]) == 0  # a table shows 20 rows unless told
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + 20 + 1 and lines[-1].startswith("20 rows (the first 20")
    assert lines[0].split() == ["key", "source", "status", "num_captions", "num_relevant", "pos_fraction", "shard"]
    assert inspect.main([str(small_corpus), "--where", "true", "--limit", "0", "--format", "csv"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + len(rows)  # csv: every row, after the header


def test_bad_queries_are_named(small_corpus, tmp_path, capsys):
    root = str(small_corpus)
    assert inspect.main([root, "--where", "num_captionz > 3"]) == 2
    err = capsys.readouterr().err
    assert '"num_captionz"' in err and "manifest columns: key, shard, source" in err
    assert inspect.main([root, "--where", "num_captions >"]) == 2
    assert "condition 'num_captions >': Parser Error" in capsys.readouterr().err
    assert inspect.main([root, "--where", "true", "--columns", "key,colour"]) == 2
    assert "unknown columns ['colour']; manifest columns: key" in capsys.readouterr().err
    assert inspect.main([root, "--where", "true", "--format", "parquet"]) == 2
    assert "--format parquet needs --output" in capsys.readouterr().err
    assert inspect.main([root, "--limit", "3"]) == 2
    assert "--limit: only with --where" in capsys.readouterr().err
    out = tmp_path / "rows.parquet"  # an error while running leaves no half-written file
    assert inspect.main([root, "--where", "CAST(key AS INT) > 0", "--format", "parquet", "--output", str(out)]) == 2
    assert "Conversion Error" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def test_query_through_a_pyarrow_filesystem(small_corpus, monkeypatch):
    """Manifests on a filesystem other than the local one (s3, gcs, ...) are scanned as a pyarrow dataset."""
    import pyarrow.fs as pafs

    from manifests import query as query_module

    local = query_module.query(str(small_corpus), "num_boxes > 3", ["key", "num_boxes"])
    found = query_module.dataset_files(str(small_corpus))
    remote = pafs.SubTreeFileSystem("/", pafs.LocalFileSystem())  # not a LocalFileSystem: the dataset path
    monkeypatch.setattr(query_module, "dataset_files", lambda root: (remote, *found[1:]))
    assert query_module.query(str(small_corpus), "num_boxes > 3", ["key", "num_boxes"]).equals(local)
    assert local.num_rows > 0


# --- histograms ----------------------------------------------------------------------------------------------------


def test_histograms_count_what_the_shards_hold(small_corpus, tmp_path, capsys):
    from manifests.histograms import SIZE

    out = tmp_path / "histograms"
    assert inspect.main([str(small_corpus), "--json", "--histograms", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    for name in ("label_density.png", "caption_length.png"):
        with Image.open(out / name) as png:
            assert png.format == "PNG" and png.size == SIZE
            png.load()
    words = []
    for sample in wds.WebDataset(sorted(str(p) for p in small_corpus.glob("*.tar")), shardshuffle=False):
        words += [len(c.split()) for c in json.loads(sample["json"])["captions"]]
    assert summary["caption_words_histogram"] == np.bincount(words).tolist()
    assert summary["caption_words"]["mean"] == pytest.approx(np.mean(words))
    assert summary["caption_words"]["p50"] == np.percentile(words, 50, method="inverted_cdf")
    fractions = np.float32(from_the_shards(small_corpus)["fractions"])
    density = summary["pos_fraction_histogram"]
    assert density["bin_width"] == 0.02
    assert density["counts"] == np.histogram(fractions, bins=50, range=(0, 1))[0].tolist()
    assert inspect.main([str(small_corpus)]) == 0
    assert "caption length in words: p10" in capsys.readouterr().out


# --- the detector's choices ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(small_corpus, tmp_path_factory):
    """A checkpoint of the tiny preset after two steps: 32 px images, a 4 x 4 grid, keep ratio 0.5."""
    from jobs import train

    run = tmp_path_factory.mktemp("tiny_run")
    args = ["--shards", str(small_corpus), "--out", str(run), "--preset", "tiny", "--batch-size", "8"]
    args += ["--workers", "0", "--vocab-size", "300", "--threads", "1", "--steps", "2", "--quiet"]
    assert train.main(args) == 0
    return run


@pytest.mark.slow
def test_detector_panels_show_the_kept_patches(small_corpus, tiny_run, tmp_path):
    import torch

    from manifests.inspect import load_samples, sample_keys
    from manifests.pictures import GAP, _titled
    from model.checkpoint import load_checkpoint, load_model
    from model.loader import square_pixels, to_tensor

    keys = sample_keys(str(small_corpus), 200, 0)
    samples = load_samples(str(small_corpus), keys)
    annotated = next(s for s in samples if s.pta is not None and s.meta["relevant"][0]["boxes"])
    plain = next(s for s in samples if s.pta is None)
    out = tmp_path / "pictures"
    args = [str(small_corpus), "--show", annotated.key, "--show", plain.key, "--out", str(out)]
    assert inspect.main([*args, "--checkpoint", str(tiny_run)]) == 0
    for sample in (annotated, plain):
        for c in range(min(3, len(sample.meta["captions"]))):
            with Image.open(out / f"{sample.key}_detector_{c}.png") as png:
                png.load()
    assert not (out / f"{plain.key}_detector_1.png").exists()  # one caption, one panel

    # the kept patches, found here without inspect's code: the model on the loader's square image and caption 0
    model, tokenizer = load_model(load_checkpoint(tiny_run))
    v = model.cfg.vision
    tokens = tokenizer([annotated.meta["captions"][0]])
    image = to_tensor(square_pixels(annotated.image, v.img_size))[None]
    with torch.no_grad():
        kept = set(model.detect(image, tokens["input_ids"], tokens["attention_mask"]).kept_idx[-1][0].tolist())
    grid = v.grid_size
    assert len(kept) == math.ceil(v.keep_ratios[-1] * grid * grid) < grid * grid

    # the third tile of the panel: kept cells show the image as it is, dropped ones grey at 0.3 brightness
    panel = np.asarray(Image.open(out / f"{annotated.key}_detector_0.png").convert("RGB"), dtype=float)
    top = _titled(Image.new("RGB", (1, 1)), "x").height - 1
    tile = panel[top : top + 256, 2 * (256 + GAP) : 2 * (256 + GAP) + 256]
    picture = Image.open(io.BytesIO(annotated.image)).convert("RGB").resize((256, 256), Image.Resampling.BILINEAR)
    original = np.asarray(picture, dtype=float)
    darkened = np.rint(0.3 * original @ np.array([0.299, 0.587, 0.114]))[..., None].repeat(3, axis=2)
    cell = 256 // grid
    dark_cells = set()
    for index in range(grid * grid):
        r, c = divmod(index, grid)
        inner = np.s_[r * cell + 2 : (r + 1) * cell - 1, c * cell + 2 : (c + 1) * cell - 1]  # clear of grid lines
        is_kept = np.abs(tile[inner] - original[inner]).max() <= 1
        is_dark = np.abs(tile[inner] - darkened[inner]).max() <= 1
        assert is_kept != is_dark, f"cell {index} is neither the image nor darkened"
        if is_dark:
            dark_cells.add(index)
    assert dark_cells == set(range(grid * grid)) - kept


def test_checkpoint_needs_samples(small_corpus, tmp_path, capsys):
    assert inspect.main([str(small_corpus), "--checkpoint", str(tmp_path)]) == 2
    assert "--checkpoint draws the detector on the samples of --show" in capsys.readouterr().err
    args = [str(small_corpus), "--sample", "1", "--out", str(tmp_path / "pictures")]
    assert inspect.main([*args, "--checkpoint", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "pictures").exists()
