"""``copa <job> ...``: one console script that dispatches to ``jobs.<job>.main``.

Job modules are imported only when called, so ``copa synth`` does not pay for importing torch or Ray.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable

import yaml

# What a user can cause: a missing, unreadable or malformed input file, or a bad setting. The toolkit raises these
# with a message that names the file or the setting; anything else is a programming error and keeps its traceback.
INPUT_ERRORS = (ValueError, OSError, yaml.YAMLError)

JOBS = {
    "synth": "write a synthetic corpus in the real COCO / Visual Genome / web-caption formats",
    "ingest": "read every source of a sources.yaml into one normalized Parquet table, captions aligned to boxes",
    "pack": "a Ray Data job: source manifest -> deterministic WebDataset shards with PTA labels and Parquet manifests",
    "train": "joint COPA pretraining (ITC, ITM, MLM, PrefixLM, PTA) streaming from shards; torchrun for DDP",
    "finetune": "fine-tune a model for retrieval (ITC + ITM) or captioning, at any resolution; same trainer",
    "evaluate": "detector precision/recall by keep ratio, retrieval R@1/5/10 and greedy captions on held-out shards",
    "export": "a trained run as a self-describing model folder (config.json, model.safetensors, tokenizer.json)",
    "inspect": "a packed dataset from its manifests: summary, histograms, SQL queries, sample and detector pictures",
    "demo": "run the whole system on the embedded default (synthetic corpus, local Ray, CPU)",
    "bench": "benchmarks, each against a baseline in the same run (copa bench --help)",
}


def job_errors(job: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorates a job's ``main``: an ``INPUT_ERRORS`` exception becomes one line on stderr, ``copa JOB: MESSAGE``,
    and exit status 2, as argparse does for a bad flag."""

    def decorate(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: list[str] | None = None) -> int:
            try:
                return main(argv)
            except INPUT_ERRORS as err:
                print(f"copa {job}: {' '.join(str(err).split())}", file=sys.stderr)
                return 2

        return run

    return decorate


def usage() -> str:
    width = max(map(len, JOBS))
    lines = [f"  {name:<{width}}  {doc}" for name, doc in JOBS.items()]
    return "usage: copa <job> [options]\n\njobs:\n" + "\n".join(lines) + "\n\n'copa <job> --help' describes a job.\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="")
        return 0
    job, rest = argv[0], argv[1:]
    if job not in JOBS:
        print(f"copa: unknown job {job!r}\n\n{usage()}", end="", file=sys.stderr)
        return 2
    module = importlib.import_module(f"jobs.{job}")
    return module.main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
