"""``copa bench vqa``: VQA inference throughput and counted GFLOPs per question at each keep ratio and detect layer,
against keep ratio 1.0 in the same run (the paper's Figure 1a/1c, its cost axis).

A question is answered as ``copa evaluate --task vqa`` answers it: the question drives the detector, is fused
with the kept patches, and the decoder writes ``--answer-tokens`` tokens (VQA v2 answers are one to three). The
model is a preset at ``--image-size`` with its initial weights: cost does not depend on what the weights learned,
and an untrained decoder never stops early, so every question costs the same number of decoding steps. GFLOPs are
counted with ``torch.utils.flop_counter`` (exact on any machine); questions per second are timed here. Accuracy
at each setting comes from a trained model: ``copa evaluate --task vqa --detect-layers ...`` (docs/downstream.md).
"""

from __future__ import annotations

import argparse
import dataclasses

import torch

from jobs.bench.runner import write_report
from model.copa import COPA
from model.downstream import settings, sweep
from model.presets import PRESETS
from model.utils import seed_everything


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="copa bench vqa", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="base", choices=sorted(PRESETS), help="model preset (default: %(default)s)")
    p.add_argument("--image-size", type=int, default=384, help="input side in pixels (default: %(default)s)")
    p.add_argument("--keep-ratios", default="1.0,0.7,0.5,0.3", help="keep ratios (default: %(default)s)")
    p.add_argument("--detect-layers", nargs="+", default=["3", "6"], metavar="L[,L]",
                   help="detector placements, each comma-separated (default: 3 6)")  # fmt: skip
    p.add_argument("--questions", type=int, default=16, help="questions answered per setting (default: 16)")
    p.add_argument("--batch-size", type=int, default=8, help="questions per forward pass (default: %(default)s)")
    p.add_argument("--question-tokens", type=int, default=12, help="tokens per question, [CLS] and [SEP] included")
    p.add_argument("--answer-tokens", type=int, default=3, help="decoding steps per answer (default: %(default)s)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default="bench/vqa.json", help="JSON report (default: %(default)s)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = PRESETS[args.preset]()
    cfg = dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, img_size=args.image_size))
    seed_everything(0)
    model = COPA(cfg).eval()
    t, n, b = cfg.text, args.questions, args.batch_size
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, args.image_size, args.image_size, generator=g) * 2 - 1
    words = torch.randint(t.mask_id + 1, t.vocab_size, (n, args.question_tokens - 2), generator=g)
    ids = torch.cat([torch.full((n, 1), t.cls_id), words, torch.full((n, 1), t.sep_id)], dim=1)

    def answer(part: slice) -> torch.Tensor:
        return model.generate(images[part], args.answer_tokens, prefix_ids=ids[part])

    def run() -> tuple[None, int]:
        for start in range(0, n, b):
            answer(slice(start, start + b))
        return None, n

    layers = [tuple(int(x) for x in option.split(",")) for option in args.detect_layers]
    keep = tuple(float(r) for r in args.keep_ratios.split(","))
    with torch.no_grad():
        rows = sweep(model, settings(layers, keep), lambda: answer(slice(0, b)), run)
    full = next((r for r in rows if r["keep_ratio"] == 1.0), rows[0])
    report = {"preset": args.preset, "image_size": args.image_size, "answer_tokens": args.answer_tokens,
              "question_tokens": args.question_tokens, "threads": torch.get_num_threads(), "rows": []}  # fmt: skip
    print(f"VQA inference, {args.preset} at {args.image_size} px, {args.answer_tokens} answer tokens, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    for r in rows:
        speed = r["items_per_s"]
        row = {"detect_layers": r["detect_layers"], "keep_ratio": r["keep_ratio"],
               "gflops_per_question": r["flops"] / b / 1e9, "questions_per_s": speed,
               "flops_vs_full": r["flops"] / full["flops"], "speed_vs_full": speed / full["items_per_s"]}  # fmt: skip
        report["rows"].append(row)
        print(f"  detect layer {r['detect_layers']} keep {r['keep_ratio']}: {row['gflops_per_question']:.2f} GFLOPs "
              f"(x{row['flops_vs_full']:.2f}), {row['questions_per_s']:.2f} questions/s "
              f"(x{row['speed_vs_full']:.2f})")  # fmt: skip
    write_report(args.out, report)
    return 0
