"""``copa pack`` under Ray, when things go wrong (DESIGN sections 4, 9 and 10): the same source and config give the
same bytes on any number of workers and nodes, after a killed worker, after a killed driver and a rerun, after a
shard was removed; a rerun with another config refuses; a ``ray job submit`` to a running cluster packs too.

Every pack here is compared with one uninterrupted single-worker reference pack. Each Ray run costs 10-25 s on a
small machine, so the corpus and the reference are made once per module, and the in-process tests share one Ray
session. Every Ray process of this module carries a tag (``RAY_TMPDIR``, see ``pack_fixtures``); the module ends
by checking that none is left.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import ingest, synth
from tests.jobs.pack_fixtures import (
    SAMPLES_PER_SHARD,
    already_done,
    assert_same_pack,
    end_processes,
    free_ports,
    kill_group,
    num_shards,
    pack_args,
    raylets,
    refused_pack,
    run_pack,
    tagged_processes,
    temp_files,
)

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # the job driver on a `ray start` head must find this `python`


@pytest.fixture(scope="module")
def ray_tag() -> str:
    """A short folder for this module's Ray sessions (their Unix socket paths must stay under ~107 bytes), set as
    RAY_TMPDIR for every Ray process started here; at the end, no process with the tag may be left."""
    tag = tempfile.mkdtemp(prefix="copa_ray_", dir="/tmp")
    raylets_before = raylets()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_TMPDIR", tag)
        yield tag
    left = end_processes(tag, grace=30.0)
    ours = {pid for pid in raylets() - raylets_before if pid in tagged_processes(tag)}
    shutil.rmtree(tag, ignore_errors=True)
    # Raylets of other Ray users on this machine may come and go; only this module's count.
    assert not ours, f"raylets left running: {sorted(ours)}"
    assert not left, f"Ray processes still running at the end of the module (killed now): {left}"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic corpus with faults (rejected rows, broken images), ingested: 127 rows, 13 shards of 10."""
    corpus = tmp_path_factory.mktemp("corpus")
    assert synth.main(["--out", str(corpus), "--images", "120", "--seed", "0", "--faults"]) == 0
    args = ["--config", f"{corpus}/sources.yaml", "--out", f"{corpus}/source.parquet", "--quiet"]
    assert ingest.main(args) == 0
    return corpus / "source.parquet"


@pytest.fixture(scope="module")
def reference(ray_tag: str, source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted pack, one worker, on the embedded cluster the job starts and stops itself. Read only."""
    import ray

    assert not ray.is_initialized(), "the reference needs a Ray session of its own; another test left one running"
    out = tmp_path_factory.mktemp("reference") / "pack"
    run_pack(source, out, "--workers", "1")
    assert not ray.is_initialized()
    assert num_shards(out) == 13 and not temp_files(out)
    return out


def pack_command(source: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jobs.pack", *pack_args(source, out, *extra)]


# --- in this process, on one shared Ray session ---------------------------------------------------------------------


@pytest.fixture(scope="class")
def ray_session(ray_tag: str, reference: Path):
    """A local Ray session the jobs join (``ray.is_initialized()``) instead of starting their own: saves the
    start-up of a cluster per run. Needs the reference first: that one starts its own."""
    import ray

    ray.init(num_cpus=2, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.usefixtures("ray_session")
class TestInProcess:
    def test_one_and_two_workers_give_the_same_bytes(self, source: Path, reference: Path, tmp_path: Path) -> None:
        run_pack(source, tmp_path / "pack", "--workers", "2")
        assert_same_pack(tmp_path / "pack", reference)

    def test_resume_redoes_a_removed_shard(self, source: Path, reference: Path, tmp_path: Path) -> None:
        out = tmp_path / "pack"
        shutil.copytree(reference, out)
        # Shard 3 as a run killed while writing it leaves it: no stats (the done-marker), a short tar, temp files.
        (out / "000003_stats.json").unlink()
        tar = (out / "000003.tar").read_bytes()
        (out / "000003.tar").write_bytes(tar[: len(tar) // 2])
        (out / "000003.tar.tmp-0123abcd").write_bytes(tar[:1000])
        (out / "000005.parquet.tmp-4567ef01").write_bytes(b"PAR1")
        (out / "dataset.json").unlink()
        printed = run_pack(source, out, "--workers", "1")
        assert already_done(printed) == 12
        assert_same_pack(out, reference)
        assert temp_files(out) == []

    def test_another_config_refuses_unless_overwrite(self, source: Path, reference: Path, tmp_path: Path) -> None:
        out = tmp_path / "pack"
        shutil.copytree(reference, out)
        assert "another config" in refused_pack(source, out, "--jpeg-quality", "70")
        assert_same_pack(out, reference)  # refused before touching anything

        run_pack(source, out, "--jpeg-quality", "70", "--overwrite")
        info = json.loads((out / "dataset.json").read_text())
        assert info["config"]["image"]["jpeg_quality"] == 70
        assert json.loads((out / "pack_config.json").read_text())["config"]["image"]["jpeg_quality"] == 70
        tars = sorted(p.name for p in reference.glob("*.tar"))
        assert sorted(p.name for p in out.glob("*.tar")) == tars
        # Not every tar: a shard whose images all fit and are baseline JPEGs already stores them untouched.
        assert any((out / t).read_bytes() != (reference / t).read_bytes() for t in tars)

    def test_another_source_refuses_even_with_the_same_rows_and_config(
        self, source: Path, reference: Path, tmp_path: Path
    ) -> None:
        out = tmp_path / "pack"
        shutil.copytree(reference, out)
        # The same number of rows and the same pack config, one caption edited: only the source's SHA-256 differs.
        table = pq.read_table(source)
        rows = table.to_pylist()
        edited = next(r for r in rows if r["captions"])
        edited["captions"] = [edited["captions"][0] + " edited", *edited["captions"][1:]]
        changed = tmp_path / "source.parquet"
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), changed)
        assert "another source" in refused_pack(changed, out)
        assert_same_pack(out, reference)  # refused before touching anything


# --- other clusters and other processes ------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_node_cluster_gives_the_same_bytes(ray_tag: str, source: Path, reference: Path, tmp_path: Path) -> None:
    """A simulated two-node cluster (one CPU each); the job joins it and leaves it running."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="WARNING")
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        run_pack(source, tmp_path / "pack")  # --workers defaults to every CPU of the cluster: 2
        assert ray.is_initialized()  # not the job's to shut down
        assert_same_pack(tmp_path / "pack", reference)
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_killed_driver_resumes_to_the_same_bytes(ray_tag: str, source: Path, reference: Path, tmp_path: Path) -> None:
    out, log = tmp_path / "pack", tmp_path / "driver.log"
    command = pack_command(source, out, "--workers", "1")
    with open(log, "wb") as f:
        driver = subprocess.Popen(command, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not glob.glob(f"{out}/*_stats.json"):
            assert driver.poll() is None, f"the pack ended before a shard was done:\n{log.read_text()}"
            assert time.monotonic() < deadline, "no shard done in 300 s"
            time.sleep(0.002)
        os.kill(driver.pid, signal.SIGKILL)
        assert driver.wait(timeout=30) == -signal.SIGKILL
    finally:
        kill_group(driver.pid)  # the embedded cluster: GCS, raylet, agents (workers sit in groups of their own)
    # Workers exit when their raylet is gone; one may still finish its shard first. Only then may a rerun start.
    end_processes(ray_tag)
    assert not (out / "dataset.json").exists(), "the driver was killed after the job was finished"
    done = len(list(out.glob("*_stats.json")))  # often 3: one task packs several shards, one after the other

    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert already_done(rerun.stdout) == done >= 1
    assert_same_pack(out, reference)
    assert temp_files(out) == []


@pytest.mark.slow
def test_killed_worker_is_retried_to_the_same_bytes(
    ray_tag: str, source: Path, reference: Path, tmp_path: Path
) -> None:
    """The first worker to create the hook file SIGKILLs itself half-way through a shard (``pipeline.pack``); Ray
    reruns the task. A subprocess, so the embedded cluster, and with it every worker, gets the hook's variable."""
    out, hook = tmp_path / "pack", tmp_path / "killed"
    env = {**os.environ, "COPA_TEST_KILL_WORKER": str(hook)}
    run = subprocess.run(
        pack_command(source, out, "--workers", "1"), cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert hook.exists(), "no worker reached the kill hook"
    assert_same_pack(out, reference)
    assert temp_files(out) == []  # the killed attempt's partial files are removed at the end of the run


@pytest.fixture
def ray_head(ray_tag: str, tmp_path: Path):
    """A cluster started with ``ray start --head --block`` in a process group of its own, so that it can be ended
    by group (not with ``ray stop``, which would end every Ray cluster of this user on the machine). Token
    authentication with a token of its own, so nothing depends on ``~/.ray``. Yields (dashboard URL, env)."""
    gcs, dashboard, agent, client, metrics = free_ports(5)
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # `python` in the job is this venv's
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    command = [
        str(VENV_BIN / "ray"), "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
        f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={client}",
        f"--metrics-export-port={metrics}",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{dashboard}"
    log = tmp_path / "head.log"
    with open(log, "wb") as f:
        head = subprocess.Popen(command, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert head.poll() is None, f"ray start failed:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the dashboard did not come up:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"{url}/api/version", timeout=2):
                    break
            except urllib.error.HTTPError:  # an answer (401: no token sent): the dashboard is up
                break
            except OSError:
                time.sleep(0.5)
        yield url, env
    finally:
        kill_group(head.pid)
        head.wait(timeout=30)
        end_processes(ray_tag)


@pytest.mark.slow
def test_ray_job_submit(
    ray_head: tuple[str, dict], ray_tag: str, source: Path, reference: Path, tmp_path: Path
) -> None:
    """DESIGN section 9 and the command in docs/pack.md: ``ray job submit --working-dir . --runtime-env
    jobs/runtime_env.yaml -- python -m jobs.pack ...`` on a running cluster, then ``python -m jobs.ingest ...
    --engine ray`` on it too. The upload leaves out the virtual
    environment and data (``.rayignore``); the job's log (what ``submit`` tails) shows one line per shard."""
    url, env = ray_head
    out = tmp_path / "pack"
    command = [
        str(VENV_BIN / "ray"), "job", "submit", "--address", url, "--working-dir", ".",
        "--runtime-env", "jobs/runtime_env.yaml", "--",
        "python", "-m", "jobs.pack", *pack_args(source, out, quiet=False),
    ]  # fmt: skip
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log
    assert "succeeded" in log
    assert sum(line.startswith("[pack] shard ") for line in log.splitlines()) == 13, log

    info = json.loads((out / "dataset.json").read_text())
    sizes = json.loads((out / "sizes.json").read_text())
    assert sorted(sizes) == [f"{i:06d}.tar" for i in range(info["num_shards"])]
    assert all((out / name).is_file() for name in sizes)
    assert sum(sizes.values()) == info["num_samples"] == 120
    assert info["config"]["samples_per_shard"] == SAMPLES_PER_SHARD
    assert_same_pack(out, reference)

    # Ingest on the same cluster: the JSON lists read by Ray Data tasks there, the same manifest as the local ingest.
    ingested = tmp_path / "ingested.parquet"
    command = [
        str(VENV_BIN / "ray"), "job", "submit", "--address", url, "--working-dir", ".",
        "--runtime-env", "jobs/runtime_env.yaml", "--",
        "python", "-m", "jobs.ingest", "--config", str(source.parent / "sources.yaml"), "--out", str(ingested),
        "--engine", "ray",
    ]  # fmt: skip
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert ingested.read_bytes() == source.read_bytes()

    uploads = glob.glob(f"{ray_tag}/ray/session_2*/runtime_resources/working_dir_files/*/")
    assert len(uploads) == 1, uploads
    uploaded = Path(uploads[0])
    assert (uploaded / "jobs" / "pack.py").is_file()
    assert not (uploaded / ".venv").exists() and not (uploaded / "demo_out").exists()
    assert not list(uploaded.rglob("*.parquet")) and not list(uploaded.rglob("*.tar"))
