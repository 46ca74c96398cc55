"""``copa bench labels``: patch-coverage labels per second per core, against JPEG decoding in the same run.

Typical samples: COCO (5 captions, 7 boxes, each caption naming 1-3 of them) and Visual Genome (50 region phrases,
each owning its region box plus 0-2 objects, 100 boxes). The baseline decodes a COCO-sized JPEG (640x480,
quality 90) with Pillow, which every packed image pays for; the figure that matters is labels time as a share of
decode time. One process, one thread: the per-core rate.
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
from PIL import Image

from jobs.bench.runner import write_report
from manifests.labels import patch_coverage


def _random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    corners = np.sort(rng.random((n, 2, 2)), axis=1)  # [n, (lo, hi), (x, y)]
    return np.stack([corners[:, 0, 0], corners[:, 0, 1], corners[:, 1, 0], corners[:, 1, 1]], axis=1)


def coco_like(rng: np.random.Generator) -> tuple[np.ndarray, list[list[int]]]:
    groups = [sorted(rng.choice(7, size=rng.integers(1, 4), replace=False).tolist()) for _ in range(5)]
    return _random_boxes(rng, 7), groups


def vg_like(rng: np.random.Generator) -> tuple[np.ndarray, list[list[int]]]:
    groups = [[r, *sorted((50 + rng.choice(50, size=rng.integers(0, 3), replace=False)).tolist())] for r in range(50)]
    return _random_boxes(rng, 100), groups


def _rate(fn, items, min_seconds: float) -> float:
    done, start = 0, time.perf_counter()
    while True:
        for item in items:
            fn(item)
        done += len(items)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


def run(grid: int, seconds: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    pixels = (pixels // 32 * 32).astype(np.uint8)  # less noise, closer to a photo's compressed size
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    jpeg = buf.getvalue()

    def decode(data: bytes) -> None:
        with Image.open(io.BytesIO(data)) as im:
            im.convert("RGB").load()

    decode_rate = _rate(decode, [jpeg] * 20, seconds)
    results = {"grid": grid, "jpeg_bytes": len(jpeg), "decode_640x480_per_s": decode_rate}
    for name, make in (("coco", coco_like), ("vg", vg_like)):
        samples = [make(rng) for _ in range(200)]
        rate = _rate(lambda s: patch_coverage(s[0], s[1], grid), samples, seconds)
        results[f"{name}_labels_per_s"] = rate
        results[f"{name}_labels_share_of_decode"] = decode_rate / rate
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="copa bench labels", description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", type=int, default=16, help="patch grid side (default: %(default)s, 256 px / 16)")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per figure (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--out", default="bench_out/labels.json", help="JSON results (default: %(default)s)")
    args = parser.parse_args(argv)
    results = run(args.grid, args.seconds, args.seed)
    print(f"baseline: Pillow decode of a 640x480 JPEG: {results['decode_640x480_per_s']:.0f}/s per core")
    for name in ("coco", "vg"):
        rate, share = results[f"{name}_labels_per_s"], results[f"{name}_labels_share_of_decode"]
        print(f"labels {name}: {rate:.0f} samples/s per core = {share:.1%} of one JPEG decode")
    write_report(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
