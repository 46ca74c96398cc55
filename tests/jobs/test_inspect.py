"""``copa inspect``: the summary equals figures computed independently from the shards themselves."""

from __future__ import annotations

import io
import json
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
        pta = decode_pta(sample["pta.npy"]) if "pta.npy" in sample else None
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
