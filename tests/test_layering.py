"""The dependency rules of DESIGN.md, checked: shared imports no framework, and torch_impl and
tf_impl never import each other (or each other's framework)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def imported_modules(package: str) -> set[str]:
    """Top-level names of every module imported anywhere in a package's source."""
    names = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_importing_shared_loads_no_framework():
    code = ("import sys, pkgutil, importlib, shared\n"
            "for m in pkgutil.iter_modules(shared.__path__): importlib.import_module('shared.' + m.name)\n"
            "print(','.join(sorted(m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         check=True)
    assert out.stdout.strip() == "", f"importing shared pulled in: {out.stdout.strip()}"


@pytest.mark.parametrize("package,forbidden", [
    ("shared", {"torch", "tensorflow", "keras", "tf_keras", "tensorflow_probability", "transformers",
                "torch_impl", "tf_impl", "sftrl"}),
    ("torch_impl", {"tensorflow", "keras", "tf_keras", "tensorflow_probability", "tf_impl", "sftrl"}),
    ("tf_impl", {"torch", "torch_impl", "sftrl"}),
])
def test_package_imports_respect_layering(package, forbidden):
    assert not imported_modules(package) & forbidden
