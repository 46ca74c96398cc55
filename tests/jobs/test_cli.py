"""The ``copa`` console script dispatches to the jobs and explains itself."""

import subprocess
import sys

import pytest

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


@pytest.mark.parametrize("job", sorted(cli.JOBS))
def test_each_job_module_has_main_and_help(job, capsys):
    """In process (the console script is checked below): argparse exits 0 after printing the usage."""
    try:
        code = cli.main([job, "--help"])
    except SystemExit as stop:
        code = stop.code
    assert code == 0
    assert "usage" in capsys.readouterr().out.lower()


def test_console_script_installed():
    result = subprocess.run(["copa", "--help"], capture_output=True, text=True, env={"PATH": sys.prefix + "/bin"})
    assert result.returncode == 0 and "synth" in result.stdout
