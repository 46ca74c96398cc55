"""DESIGN section 3: data moves one way, and every module of a package imports only what the package allows.

Two checks per package. Statically, every import statement of every module (function-level ones included) names
the standard library, the package itself, a package upstream of it, or a third-party library on its allow-list.
At run time, importing every module of the package in a fresh interpreter loads nothing it must not (Ray and the
packages downstream), so no path, lazy import included, pulls them in.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# What each package may import besides the standard library and itself (its docstring says the same).
ALLOWED = {
    "manifests": {"numpy", "pyarrow", "PIL", "matplotlib", "duckdb"},
    "pipeline": {"manifests", "numpy", "pyarrow", "PIL", "cv2", "ijson", "yaml", "tqdm"},
    "model": {
        "manifests",
        *("torch", "torchvision", "timm", "transformers", "tokenizers", "safetensors"),
        *("numpy", "pyarrow", "PIL", "albumentations", "webdataset", "tqdm"),
    },
}
# Never loaded by importing a package's modules, directly or through a library.
FORBIDDEN = {
    "manifests": ["ray", "torch", "pipeline", "model", "jobs"],
    "pipeline": ["ray", "torch", "model", "jobs"],
    "model": ["ray", "pipeline", "jobs"],
}


def imported_top_level(path: Path) -> dict[str, int]:
    """Top-level names of the absolute imports in a module, with the line of the first one."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            found.setdefault(name.split(".")[0], node.lineno)
    return found


def test_import_scanner_sees_function_level_and_from_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os.path\nfrom a.b import c\n\ndef f():\n    import ray\n    from . import sibling\n")
    assert imported_top_level(module) == {"os": 1, "a": 2, "ray": 5}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_every_module_imports_only_what_its_package_allows(package):
    allowed = ALLOWED[package] | {package, "__future__"} | set(sys.stdlib_module_names)
    modules = sorted((ROOT / package).rglob("*.py"))
    assert len(modules) > 5
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in modules
        for name, line in imported_top_level(path).items()
        if name not in allowed
    ]
    assert not bad, "\n".join(bad)


WALK = """
import importlib, pkgutil, sys
import {package}
names = [info.name for info in pkgutil.walk_packages({package}.__path__, "{package}.")]
for name in names:
    importlib.import_module(name)
print(len(names), ",".join(sorted(m for m in {forbidden} if m in sys.modules)))
"""


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_importing_every_module_loads_nothing_downstream(package):
    code = WALK.format(package=package, forbidden=FORBIDDEN[package])
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    assert int(out[0]) > 5, f"walked only {out[0]} modules of {package}"
    assert out[1:] == [], f"importing {package}'s modules loaded {out[1]}"
