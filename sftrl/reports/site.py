"""What turns docs/ into the teaching site, as mkdocs builds it (sftrl/reports/mkdocs_hooks.py calls
these): source tabs read from the code, formulas turned into MathML, the lessons turned into pages.

* `[[tabs shared/reference.py::ppo_clip_loss | torch_impl/losses.py::ppo_clip_loss | tf_impl/losses.py::ppo_clip_loss]]`
  on a line of its own becomes three linked tabs (NumPy, PyTorch, TensorFlow: the label follows the
  package) holding each function's source as the file has it now, found by name in the file's syntax
  tree -- so a page cannot drift from the code, and a renamed function fails the build.
* `$...$` and `$$...$$` outside code become MathML at build time: the site needs no script from the
  network, and Chromium, Firefox and Safari draw MathML natively.
* docs/lessons/NAME.py (jupytext percent format) becomes the page lessons/NAME.md.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LABELS = {"shared": "NumPy", "torch_impl": "PyTorch", "tf_impl": "TensorFlow", "sftrl": "sftrl",
          "benchmarks": "benchmarks"}
TABS = re.compile(r"^\[\[tabs (?P<refs>.+?)\]\][ \t]*$", re.M)


class SiteError(Exception):
    """A page names a file or function that is not there (the build stops with it)."""


# --- source tabs ---------------------------------------------------------------------------------

def find_definition(tree: ast.Module, qualname: str):
    """The `def` or `class` node of a dotted name (`PPOTrainer.update`) at the top of a module."""
    body, node = tree.body, None
    for part in qualname.split("."):
        node = next((n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                     and n.name == part), None)
        if node is None:
            return None
        body = node.body
    return node


def source_of(ref: str) -> tuple[str, int, int, str]:
    """`path::qualname` -> (path, first line, last line, source text); decorators included."""
    path, _, qualname = ref.strip().partition("::")
    file = ROOT / path
    if not qualname or not file.is_file():
        raise SiteError(f"{ref!r}: expected an existing file::function (from the repository root)")
    text = file.read_text()
    node = find_definition(ast.parse(text), qualname)
    if node is None:
        raise SiteError(f"{ref!r}: {path} defines no {qualname}")
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    lines = text.splitlines()[first - 1:node.end_lineno]
    return path, first, node.end_lineno, "\n".join(lines)


def label_of(path: str) -> str:
    if path.startswith("sftrl/parity/"):
        return "parity case"
    return LABELS.get(path.split("/", 1)[0], path)


def tab_refs(markdown: str) -> list[list[str]]:
    """Every `[[tabs ...]]` of a page, as its list of `path::qualname` references."""
    return [[r.strip() for r in m["refs"].split("|")] for m in TABS.finditer(markdown)]


def render_tabs(refs: list[str]) -> str:
    """Content tabs (pymdownx.tabbed), one per reference, each its function's source."""
    out = []
    for ref in refs:
        path, first, last, code = source_of(ref)
        out += [f'=== "{label_of(path)}"', "",
                f"    `{path}`, lines {first}–{last}", "",
                "    ```python", *("    " + line if line else "" for line in code.splitlines()), "    ```", ""]
    return "\n".join(out)


def expand_tabs(markdown: str) -> str:
    return TABS.sub(lambda m: render_tabs([r.strip() for r in m["refs"].split("|")]), markdown)


# --- formulas ------------------------------------------------------------------------------------

CODE = re.compile(r"(^(?P<fence>```|~~~).*?^(?P=fence)[ \t]*$|`[^`\n]+`)", re.M | re.S)
MATH = re.compile(r"\$\$(?P<block>.+?)\$\$|(?<![\\$\w])\$(?P<inline>[^\s$](?:[^$\n]*?[^\s$\\])?)\$(?![\w$])", re.S)


def stash_math(markdown: str) -> tuple[str, list[str]]:
    """The page with every formula outside code replaced by a placeholder, and the formulas as
    MathML (put back into the HTML by `restore_math`, so Markdown never reads inside them)."""
    from latex2mathml.converter import convert

    formulas: list[str] = []

    def replace(m):
        block = m["block"] is not None
        latex = (m["block"] if block else m["inline"]).strip()
        try:
            mathml = convert(latex, display="block" if block else "inline")
        except Exception as error:   # latex2mathml raises its own exception types
            raise SiteError(f"cannot read the formula ${latex}$: {error}") from error
        formulas.append(f'<div class="math">{mathml}</div>' if block else mathml)
        return f"SFTRLMATH{len(formulas) - 1}X"

    parts = CODE.split(markdown)
    # re.split with groups returns [text, whole match, fence, text, ...]: only text is read for math
    out, i = [], 0
    while i < len(parts):
        out.append(MATH.sub(replace, parts[i]))
        if i + 1 < len(parts):
            out.append(parts[i + 1])
        i += 3
    return "".join(out), formulas


def restore_math(page_html: str, formulas: list[str]) -> str:
    return re.sub(r"SFTRLMATH(\d+)X", lambda m: formulas[int(m[1])], page_html)


# --- lessons -------------------------------------------------------------------------------------

def lesson_markdown(source_path: Path) -> str:
    """A jupytext percent-format lesson as a page: its Markdown cells as text, its code cells as
    Python blocks, with the commands that open and run it."""
    import jupytext

    notebook = jupytext.reads(source_path.read_text(), fmt="py:percent")
    rel = source_path.relative_to(ROOT).as_posix()
    parts = []
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            parts.append(cell.source)
        elif cell.source.strip():
            parts.append("```python\n" + cell.source + "\n```")
    title, rest = parts[0], parts[1:]
    run_it = (f'!!! note "Run it"\n    The source is `{rel}`, a jupytext notebook: run it whole with '
              f"`python {rel}`, or open it in Jupyter after `jupytext --to notebook {rel}`; "
              f"`make test` runs it at a tiny size (`SFTRL_LESSON_SIZE=tiny`).")
    return "\n\n".join([title, run_it, *rest]) + "\n"
