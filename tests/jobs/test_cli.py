"""The ``copa`` console script dispatches to the jobs and explains itself."""

import subprocess
import sys

from jobs import bench, cli


def test_help_lists_every_job(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for job in cli.JOBS:
        assert job in out


def test_unknown_job_is_an_error(capsys):
    assert cli.main(["nope"]) == 2
    assert "unknown job 'nope'" in capsys.readouterr().err
    assert bench.main(["nope"]) == 2


def test_each_job_module_has_main_and_help():
    for job in cli.JOBS:
        result = subprocess.run([sys.executable, "-m", "jobs.cli", job, "--help"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert "usage" in result.stdout.lower()


def test_console_script_installed():
    result = subprocess.run(["copa", "--help"], capture_output=True, text=True, env={"PATH": sys.prefix + "/bin"})
    assert result.returncode == 0 and "synth" in result.stdout
