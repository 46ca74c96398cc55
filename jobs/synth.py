"""`copa synth`: write a small synthetic pretraining corpus in the real COCO, VG and ALBEF/BLIP json formats.

    python -m jobs.synth --out data/synth --images 1000 --seed 0 [--faults] [--karpathy N] [--vqa N] [--refexp N]

The corpus, its layout and its ground truth are described in `pipeline.synth`. Prints one line per part.
"""

from __future__ import annotations

import argparse

from jobs.cli import job_errors
from pipeline.synth import SynthConfig, SynthReport, generate


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="copa synth",
        description="Write a synthetic COCO/VG/web corpus with exact boxes, captions and a sources.yaml.",
    )
    parser.add_argument(
        "--out",
        required=True,
        help="output folder; must be absent, empty, or an earlier synth output (which is replaced)",
    )
    parser.add_argument(
        "--images",
        type=int,
        default=1000,
        help="image records over all parts: --coco-fraction COCO, --vg-fraction VG (at least 3 each), the rest web "
        "(default 1000)",
    )
    parser.add_argument(
        "--coco-fraction", type=float, default=0.025, help="share of images in the COCO part, up to 0.5 (default 0.025)"
    )
    parser.add_argument(
        "--vg-fraction", type=float, default=0.025, help="share of images in the VG part, up to 0.5 (default 0.025)"
    )
    parser.add_argument("--seed", type=int, default=0, help="same seed gives byte-identical files (default 0)")
    parser.add_argument(
        "--karpathy",
        type=int,
        default=0,
        metavar="N",
        help="also write a downstream set of N other pictures in Karpathy's split format (karpathy/: 3/5 train, "
        "1/5 val, 1/5 test, five captions each, a sources_<split>.yaml per split); at least 5 (default 0: none)",
    )
    parser.add_argument(
        "--vqa",
        type=int,
        default=0,
        metavar="N",
        help="also write a VQA v2 set of N other pictures (vqa/: 4/5 train, 1/5 val; official question and annotation "
        "files, the same questions as ALBEF's vqa_<split>.json, sources_<split>.yaml and sources_json_<split>.yaml); "
        "at least 5 (default 0: none)",
    )
    parser.add_argument(
        "--refexp",
        type=int,
        default=0,
        metavar="N",
        help="also write a RefCOCO+-style grounding set of N other pictures (refexp/: MDETR's "
        "finetune_refcoco+_<split>.json, 3/5 train, 2/15 each val, testA (people), testB (other things); a "
        "sources_<split>.yaml per split); at least 15 (default 0: none)",
    )
    parser.add_argument(
        "--faults",
        action="store_true",
        help="also write deliberately bad items (broken files, bad boxes, bad captions) listed in faults.json",
    )
    return parser


def _summary(report: SynthReport) -> str:
    lines = [f"{'part':<6} {'images':>8} {'captions':>9} {'boxes':>7} {'files':>7} {'seconds':>8}"]
    for p in report.parts:
        lines.append(
            f"{p.name:<6} {p.num_images:>8} {p.num_captions:>9} {p.num_boxes:>7} {p.num_files:>7} {p.seconds:>8.2f}"
        )
    faults = f", {report.num_faults} faults listed in faults.json" if report.num_faults else ""
    lines.append(f"wrote {report.out} in {report.seconds:.2f} s{faults}; sources in {report.out / 'sources.yaml'}")
    if any(p.name == "karpathy" for p in report.parts):
        lines.append(f"downstream set: {report.out / 'karpathy'}/sources_{{train,val,test}}.yaml, one per split")
    if any(p.name == "vqa" for p in report.parts):
        lines.append(f"VQA set: {report.out / 'vqa'}/sources_{{train,val}}.yaml (ALBEF form: sources_json_*.yaml)")
    if any(p.name == "refexp" for p in report.parts):
        lines.append(f"refexp set: {report.out / 'refexp'}/sources_{{train,val,testA,testB}}.yaml")
    return "\n".join(lines)


@job_errors("synth")
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = SynthConfig(
            out=args.out,
            num_images=args.images,
            seed=args.seed,
            faults=args.faults,
            coco_fraction=args.coco_fraction,
            vg_fraction=args.vg_fraction,
            karpathy_images=args.karpathy,
            vqa_images=args.vqa,
            refexp_images=args.refexp,
        )
    except ValueError as error:  # a bad setting: say which, without a traceback
        _parser().error(str(error))
    report = generate(cfg, progress=True)
    print(_summary(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
