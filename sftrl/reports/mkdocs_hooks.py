"""mkdocs hooks (named in mkdocs.yml): the lessons become pages, `[[tabs ...]]` lines become source
tabs, formulas become MathML. The work is done in sftrl/reports/site.py."""

from __future__ import annotations

from mkdocs.structure.files import File

from sftrl.reports.site import ROOT, expand_tabs, lesson_markdown, restore_math, stash_math

_formulas: dict[str, list[str]] = {}


def on_files(files, config):
    """Add lessons/NAME.md, generated from docs/lessons/NAME.py, beside the source file itself."""
    for source in sorted((ROOT / "docs" / "lessons").glob("*.py")):
        files.append(File.generated(config, f"lessons/{source.stem}.md", content=lesson_markdown(source)))
    return files


def on_page_markdown(markdown, page, config, files):
    markdown, formulas = stash_math(expand_tabs(markdown))
    _formulas[page.file.src_uri] = formulas
    return markdown


def on_page_content(html, page, config, files):
    return restore_math(html, _formulas.pop(page.file.src_uri, []))
