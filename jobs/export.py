"""``copa export``: a trained run as a self-describing model folder to share, with no pickles.

    copa export --run RUN [--out DIR]

``RUN`` is a run folder (its latest checkpoint) or a checkpoint file. ``DIR`` (default ``RUN/export``) gets
``config.json`` (the full model config, the training settings and the step), ``model.safetensors``,
``tokenizer.json`` and a ``README.md`` with the training facts. ``COPA.from_pretrained(DIR)`` loads it back exactly,
and ``copa evaluate --checkpoint DIR`` and ``copa inspect ... --checkpoint DIR`` take it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs.cli import job_errors
from model.checkpoint import CHECKPOINT_DIR, export_model, load_checkpoint


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="copa export", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run folder (its latest checkpoint) or a checkpoint file")
    p.add_argument("--out", help="the model folder to write; must be new or empty (default: RUN/export)")
    return p.parse_args(argv)


@job_errors("export")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    state = load_checkpoint(args.run)
    checkpoint = Path(state["path"])
    run = checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINT_DIR else checkpoint.parent
    out = export_model(state, args.out or run / "export")
    print(f"[export] step {state['step']} of {checkpoint} -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
