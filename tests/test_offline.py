"""Nothing at run time touches the network: in a fresh interpreter whose internet sockets and name lookups fail
(loopback and Unix sockets stay open, as Ray and torch's process groups use them), importing every module of the
toolkit and running a small job (synth -> ingest -> pack -> two training steps -> evaluate) makes no attempt.

Without ``manifests/offline.py`` albumentations asks the package registry for its newest version at import."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

GUARD = """
import socket, sys, json
ATTEMPTS = []
LOCAL = {"127.0.0.1", "::1", "localhost", "0.0.0.0", ""}

def _host(address):
    return address[0] if isinstance(address, tuple) else address

def _blocked(what, address):
    ATTEMPTS.append(f"{what} {address!r}")
    raise OSError(f"network blocked by tests/test_offline.py: {what} {address!r}")

_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

def connect(self, address):
    if self.family == socket.AF_UNIX or _host(address) in LOCAL:
        return _connect(self, address)
    _blocked("connect", address)

def connect_ex(self, address):
    if self.family == socket.AF_UNIX or _host(address) in LOCAL:
        return _connect_ex(self, address)
    _blocked("connect_ex", address)

def getaddrinfo(host, *args, **kwargs):
    if host in LOCAL or host is None:
        return _getaddrinfo(host, *args, **kwargs)
    _blocked("getaddrinfo", host)

socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
"""

JOB = """
import importlib, pkgutil, time
from pathlib import Path
import manifests, model, pipeline, jobs
for package in (manifests, pipeline, model, jobs):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)

from jobs import evaluate, ingest, synth, train
from jobs.pack import pack_in_process
from manifests.dataset import Geometry
from pipeline.pack import PackConfig
from pipeline.rows import read_source_table

root = Path(sys.argv[1])
assert synth.main(["--out", str(root / "corpus"), "--images", "60", "--coco-fraction", "0.3"]) == 0
assert ingest.main(["--config", str(root / "corpus" / "sources.yaml"), "--out", str(root / "src.parquet"),
                    "--quiet"]) == 0
rows = read_source_table(str(root / "src.parquet")).to_pylist()
pack_in_process(rows, str(root / "shards"), PackConfig(samples_per_shard=30, geometry=Geometry(32, 8)))
args = ["--shards", str(root / "shards"), "--out", str(root / "run"), "--preset", "tiny", "--steps", "2",
        "--batch-size", "4", "--workers", "1", "--vocab-size", "200", "--holdout-shards", "1", "--quiet"]
assert train.main(args) == 0
assert evaluate.main(["--checkpoint", str(root / "run"), "--captions", "1", "--pictures", "0"]) == 0
time.sleep(3)  # background checks (albumentations runs its own in a thread) get the time to try
print(json.dumps(ATTEMPTS))
"""


@pytest.mark.slow
def test_imports_and_a_small_job_make_no_network_attempt(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("NO_ALBUMENTATIONS_UPDATE", "RAY_USAGE_STATS_ENABLED")}
    env |= {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("HF_HUB_")}  # the toolkit must set what it needs
    proc = subprocess.run(
        [sys.executable, "-c", GUARD + JOB, str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    attempts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert attempts == [], f"network attempts at run time: {attempts}"
