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


PACKAGES = ("shared", "torch_impl", "tf_impl", "sftrl", "benchmarks")


def project_import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports, anywhere in its source (inside functions too:
    a lazy import is still a dependency)."""
    def module_name(path):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    modules = {module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]) if node.level else ""
                module = ".".join(part for part in (base, node.module) if part)
                imported.update([module] + [f"{module}.{alias.name}" for alias in node.names])
        deps = set()
        for target in imported:
            while target and target not in modules:  # `from a.b import c`: c may be a name, not a module
                target = target.rpartition(".")[0]
            if target and target != name:
                deps.add(target)
        graph[name] = deps
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_import_cycle_finder_finds_a_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_project():
    """Not between packages, nor inside one (sftrl.cli -> sftrl.pipeline -> sftrl.cli was one)."""
    graph = project_import_graph()
    assert "sftrl.pipeline" in graph and "shared.reference" in graph  # the walk found the modules
    assert import_cycles(graph) == []


MAX_FUNCTION_LINES = 60
# Functions allowed to be longer, each with its reason (none today).
LONG_FUNCTIONS: dict[str, str] = {}


def long_functions(source: str, filename: str) -> list[str]:
    """'path:line name (N lines)' for every function (methods and nested ones too) longer than
    MAX_FUNCTION_LINES, decorators and docstring included."""
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - min([node.lineno] + [d.lineno for d in node.decorator_list]) + 1
            if lines > MAX_FUNCTION_LINES and f"{filename}:{node.name}" not in LONG_FUNCTIONS:
                found.append(f"{filename}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_long_function_finder_counts_lines():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    assert long_functions(f"def f():\n{body}\n", "a.py") == ["a.py:1 f (61 lines)"]
    assert long_functions(f"def f():\n{body}\n".replace("    x0 = 0\n", ""), "a.py") == []


def test_no_function_is_longer_than_a_screen():
    """A phase of the algorithm is a function one can read in one screen (STYLE.md: cleanrl's loop)."""
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            found += long_functions(path.read_text(), str(path.relative_to(REPO)))
    assert found == []
