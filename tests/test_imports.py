"""DESIGN section 3: data moves one way. The trainer side never loads the pipeline or Ray."""

import subprocess
import sys

import pytest

CHECK = """
import sys
import {module}
loaded = sorted(m for m in {forbidden} if m in sys.modules)
print(",".join(loaded))
"""


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("model", ["ray", "pipeline", "jobs"]),
        ("manifests", ["ray", "pipeline", "model", "jobs", "torch"]),
        ("pipeline", ["model", "jobs", "torch"]),
    ],
)
def test_import_direction(module, forbidden):
    code = CHECK.format(module=module, forbidden=forbidden)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing {module} loaded {out}"


def test_every_package_module_respects_the_rules():
    # Import every module of each package, not only the package's __init__.
    code = """
import importlib, pkgutil, sys
import {pkg}
for info in pkgutil.walk_packages({pkg}.__path__, "{pkg}."):
    importlib.import_module(info.name)
print(",".join(sorted(m for m in {forbidden} if m in sys.modules)))
"""
    rules = {"model": ["ray", "pipeline", "jobs"], "manifests": ["ray", "pipeline", "model", "jobs", "torch"]}
    for pkg, forbidden in rules.items():
        out = subprocess.run(
            [sys.executable, "-c", code.format(pkg=pkg, forbidden=forbidden)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert out == "", f"{pkg} loaded {out}"
