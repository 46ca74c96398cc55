"""``python -m jobs.bench <what>``, as ``copa bench <what>``."""

from jobs.bench.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
