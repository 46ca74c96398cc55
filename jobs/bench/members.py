"""``copa bench members``: what the uniform member set (schema 2: every sample has ``pta.npy``, an empty
``[0, G, G]`` grid without boxes) costs against schema 1's layout (``pta.npy`` only with boxes), same samples.

The shards: a synthetic corpus at the real 4M mix (``--coco-fraction``/``--vg-fraction``, 2.5% each by default, so
about 95% of the samples have no boxes), packed at the default geometry in this process (``pack_in_process``), then
rewritten as schema 1 by dropping the empty grids (a plain tar rewrite). Figures, each against the schema 1 copy:

- bytes on disk: the totals (measured), and per sample without boxes (counted: one 512-byte tar header plus the
  128-byte ``.npy`` header padded to a 512-byte block) scaled to 4M samples at this mix;
- read: every sample's members out of the tars (``webdataset.tarfile_to_samples``, no decoding), and the same with
  the JSON and the labels decoded as the loader does (``decode_labels``); medians of ``--reps`` alternated runs;
- write: the decoded samples' members written to a tar in memory, with and without the empty grids (both encode
  them; encoding an empty ``.npy`` takes microseconds).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import webdataset as wds

from jobs import ingest, synth
from jobs.bench.runner import write_report
from jobs.pack import pack_in_process
from manifests.samples import decode_labels, encode_pta, encode_sample, iter_tar_samples, no_labels
from manifests.schema import PTA_EXT
from pipeline.pack import PackConfig
from pipeline.rows import read_source_table

CORPUS_SAMPLES = 4_000_000


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="copa bench members", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=3000, help="images in the generated corpus (default: %(default)s)")
    p.add_argument("--coco-fraction", type=float, default=0.025, help="(default: %(default)s)")
    p.add_argument("--vg-fraction", type=float, default=0.025, help="(default: %(default)s)")
    p.add_argument("--reps", type=int, default=5, help="alternated timing repetitions (default: %(default)s)")
    p.add_argument("--out", default="bench_out/members.json", help="JSON report (default: %(default)s)")
    return p.parse_args(argv)


def schema_1_copy(src: Path, dst: Path) -> int:
    """``src`` without the empty grids; returns how many members were dropped."""
    dropped = 0
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as tout:
        for info in tin:
            data = tin.extractfile(info).read()
            if info.name.endswith("." + PTA_EXT) and _empty_grid(data):
                dropped += 1
                continue
            tout.addfile(info, io.BytesIO(data))
    return dropped


def _empty_grid(data: bytes) -> bool:
    return np.load(io.BytesIO(data), allow_pickle=False).shape[0] == 0


def read_members(urls: list[str]) -> int:
    return sum(1 for _ in wds.tarfile_to_samples()(dict(url=u) for u in urls))


def read_decoded(urls: list[str]) -> int:
    """Members read and decoded as ``decode_sample`` does: the JSON, and the grid (``decode_labels``, which parses
    the one empty grid of a dataset once)."""
    count = 0
    for raw in wds.tarfile_to_samples()(dict(url=u) for u in urls):
        json.loads(raw["json"])
        decode_labels(raw.get(PTA_EXT))
        count += 1
    return count


def write_tar(samples: list, grid: int, keep_empty: bool) -> None:
    """The samples' members into an in-memory tar, the empty grids kept (schema 2) or left out (schema 1)."""
    with tarfile.open(fileobj=io.BytesIO(), mode="w", format=tarfile.PAX_FORMAT) as tar:
        for sample in samples:
            for ext, data in encode_sample(sample, grid).items():
                if ext == PTA_EXT and sample.pta is None and not keep_empty:
                    continue
                info = tarfile.TarInfo(f"{sample.key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def timed(fn, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv or [])
    with tempfile.TemporaryDirectory(prefix="copa_bench_members_") as tmp:
        root = Path(tmp)
        corpus, source, v2, v1 = root / "corpus", root / "source.parquet", root / "v2", root / "v1"
        synth.main(["--out", str(corpus), "--images", str(args.images), "--coco-fraction", str(args.coco_fraction),
                    "--vg-fraction", str(args.vg_fraction)])  # fmt: skip
        ingest.main(["--config", str(corpus / "sources.yaml"), "--out", str(source), "--quiet"])
        config = PackConfig(samples_per_shard=1000)
        pack_in_process(read_source_table(str(source)).to_pylist(), str(v2), config)
        v1.mkdir()
        dropped = sum(schema_1_copy(p, v1 / p.name) for p in sorted(v2.glob("*.tar")))
        urls = {name: sorted(str(p) for p in d.glob("*.tar")) for name, d in (("v2", v2), ("v1", v1))}
        samples = []
        for url in urls["v2"]:
            with open(url, "rb") as f:
                samples += list(iter_tar_samples(f))
        num = len(samples)
        size = {name: sum(Path(u).stat().st_size for u in us) for name, us in urls.items()}
        times: dict[str, list[float]] = {}
        for _ in range(args.reps):  # alternated, so drift lands on both layouts
            for name in ("v1", "v2"):
                times.setdefault(f"read {name}", []).extend(timed(lambda n=name: read_members(urls[n]), 1))
                times.setdefault(f"decode {name}", []).extend(timed(lambda n=name: read_decoded(urls[n]), 1))
                keep = name == "v2"
                times.setdefault(f"write {name}", []).extend(
                    timed(lambda k=keep: write_tar(samples, config.geometry.grid, k), 1)
                )
    per_empty = tarfile.BLOCKSIZE + -(-len(encode_pta(no_labels(config.geometry.grid))) // tarfile.BLOCKSIZE) * (
        tarfile.BLOCKSIZE
    )  # counted: the member's header block and its data padded to whole blocks
    median = {k: statistics.median(v) for k, v in times.items()}
    report = {
        "benchmark": "members",
        "args": vars(args),
        "samples": num,
        "samples_without_boxes": dropped,
        "bytes": size,
        "bytes_per_sample_without_boxes": per_empty,
        "bytes_over_schema_1": size["v2"] / size["v1"] - 1.0,
        "extra_bytes_at_4m_mix": per_empty * CORPUS_SAMPLES * dropped / num,
        "seconds": median,
        "ratios": {what: median[f"{what} v2"] / median[f"{what} v1"] for what in ("read", "decode", "write")},
    }
    write_report(args.out, report)
    r = report["ratios"]
    print(
        f"bench members: {num} samples, {dropped} without boxes ({100 * dropped / num:.1f}%): schema 2 adds "
        f"{per_empty} bytes per sample without boxes (counted), {100 * report['bytes_over_schema_1']:+.2f}% bytes over "
        f"schema 1 here ({size['v1'] / num / 1e3:.1f} kB per sample), {report['extra_bytes_at_4m_mix'] / 1e9:.2f} GB "
        "over 4M samples at this mix"
    )
    print(
        f"bench members: schema 2 vs schema 1, same samples: read x{r['read']:.3f}, read + decode labels "
        f"x{r['decode']:.3f}, write x{r['write']:.3f} the time (medians of {args.reps} alternated runs; per sample "
        + ", ".join(f"{w} {1e6 * median[f'{w} v1'] / num:.0f} -> {1e6 * median[f'{w} v2'] / num:.0f} us" for w in r)
        + ")"
    )
    print(f"[bench members] wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
