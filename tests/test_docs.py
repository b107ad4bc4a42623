"""The teaching site: every method page shows its NumPy, PyTorch and TensorFlow code read from the
named source functions and its results from generated files; no page or the README quotes a number
that no generated file holds; the generated files are what `make results` writes from the committed
run folders; `mkdocs build --strict` builds the site offline."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import REPO
from sftrl.reports import site
from sftrl.reports.results import GENERATED_NOTE

DOCS = REPO / "docs"
GENERATED = DOCS / "results" / "generated"
METHOD_PAGES = ("attention", "sft", "lora", "reward-model", "ppo", "grpo", "rloo", "reinforce", "dpo",
                "metrics", "calibration")
SNIPPET = re.compile(r'^--8<-- "(?P<path>[^"]+)"', re.M)


def hand_written_pages():
    return sorted(p for p in DOCS.rglob("*.md") if GENERATED not in p.parents and DOCS / "results" / "main"
                  not in p.parents and DOCS / "results" / "study" not in p.parents)


@pytest.mark.parametrize("name", METHOD_PAGES)
def test_every_method_page_has_its_three_tabs_from_source_functions_and_generated_results(name):
    page = (DOCS / "methods" / f"{name}.md").read_text()
    assert re.search(r"^\*Seed: §\d", page, re.M), f"{name}: no seed section line"
    assert "$$" in page, f"{name}: no displayed formula"
    groups = site.tab_refs(page)
    three = [refs for refs in groups
             if [site.label_of(r.split("::")[0]) for r in refs] == ["NumPy", "PyTorch", "TensorFlow"]]
    assert three, f"{name}: no NumPy | PyTorch | TensorFlow tab group"
    for refs in groups:
        for ref in refs:
            path, first, last, code = site.source_of(ref)       # raises if the function is not there
            qualname = ref.split("::")[1].split(".")[-1]
            assert re.search(rf"^\s*(def|class) {qualname}\b", code, re.M) and last >= first
    rendered = site.expand_tabs(page)
    assert '=== "NumPy"' in rendered and '=== "PyTorch"' in rendered and '=== "TensorFlow"' in rendered
    included = [m["path"] for m in SNIPPET.finditer(page)]
    results = [p for p in included if p.startswith("results/generated/") and not p.startswith("results/generated/parity/")]
    assert results, f"{name}: no measured results included from docs/results/generated/"
    assert f"results/generated/parity/{name}.md" in included or name in ("calibration",), name
    for path in included:
        text = (DOCS / path).read_text()
        assert text.startswith(GENERATED_NOTE.split("{")[0]), f"{path} is not a generated file"


def test_source_of_reads_the_function_as_the_file_has_it():
    path, first, last, code = site.source_of("shared/reference.py::ppo_clip_loss")
    lines = (REPO / path).read_text().splitlines()
    assert code == "\n".join(lines[first - 1:last]) and code.startswith("def ppo_clip_loss(")
    assert site.source_of("tf_impl/ppo.py::PPOTrainer._loss")[3].lstrip().startswith("def _loss(")
    with pytest.raises(site.SiteError, match="defines no no_such_function"):
        site.source_of("shared/reference.py::no_such_function")


def test_formulas_become_mathml_outside_code_only():
    text = "A $x^2$ and `$not math$` and\n\n$$\\frac{a}{b}$$\n\n```\n$y$\n```\nprice \\$5"
    stashed, formulas = site.stash_math(text)
    assert len(formulas) == 2 and "`$not math$`" in stashed and "```\n$y$\n```" in stashed
    assert formulas[0].startswith("<math") and 'display="block"' in formulas[1] and "<mfrac>" in formulas[1]
    assert site.restore_math(stashed, formulas).count("<math") == 2


# --- numbers ---------------------------------------------------------------------------------------

NUMBER = re.compile(r"(?<![\w.§/-])[+\-−]?\d+\.\d+(?![\w.])")
NOT_PROSE = re.compile(r"^```.*?^```|`[^`\n]+`|\$\$.+?\$\$|\$[^$\n]+\$|^\[\[tabs .*$|^--8<-- .*$|\]\([^)]*\)",
                       re.M | re.S)


def quoted_numbers(text: str) -> set[str]:
    """The decimal numbers a page states in its prose (code, formulas, links and includes left out)."""
    return {m.lstrip("+-−") for m in NUMBER.findall(NOT_PROSE.sub(" ", text))}


def test_quoted_numbers_finds_prose_numbers_only():
    text = "gain +0.085 and 1.56× `0.2` $\\epsilon = 0.2$ v1.2.3 §3.1.2 [x](a/0.5.md)\n```\n9.9\n```"
    assert quoted_numbers(text) == {"0.085", "1.56"}


def test_no_page_and_not_the_readme_quotes_a_number_that_no_generated_file_holds():
    generated = " ".join(p.read_text() for p in GENERATED.rglob("*.md"))
    held = set(NUMBER.findall(generated)) | {n.lstrip("+-−") for n in NUMBER.findall(generated)}
    pages = {page: page.read_text() for page in [*hand_written_pages(), REPO / "README.md"]}
    pages.update({lesson: site.lesson_markdown(lesson) for lesson in (DOCS / "lessons").glob("*.py")})
    for page, text in pages.items():
        missing = quoted_numbers(text) - held
        assert not missing, f"{page.relative_to(REPO)} quotes {sorted(missing)}, which no generated file holds"


# --- generated files -------------------------------------------------------------------------------

def test_the_generated_results_are_what_make_results_writes_from_the_committed_runs(tmp_path):
    from sftrl.reports.results import generate

    generate(DOCS / "results" / "main", DOCS / "results" / "study", REPO / "benchmarks" / "results" / "results.json",
             DOCS / "results" / "parity.json", tmp_path,
             [REPO / "benchmarks" / "results" / name / "results.json" for name in ("scaling", "decoders", "profile")])
    fresh = {p.relative_to(tmp_path): p.read_text() for p in tmp_path.rglob("*.md")}
    committed = {p.relative_to(GENERATED): p.read_text() for p in GENERATED.rglob("*.md")}
    assert fresh.keys() == committed.keys()
    for name in fresh:                  # every source records its CPU and commit: nothing depends on the clone
        assert fresh[name] == committed[name], f"{name} is stale"
    assert {p.name for p in tmp_path.rglob("*.png")} == {p.name for p in GENERATED.rglob("*.png")}


def test_the_home_and_study_headlines_are_the_report_tables_of_the_committed_runs():
    import json

    from sftrl.reports.pipeline import readme_table
    from sftrl.reports.study import headline_table

    main = json.loads((DOCS / "results" / "main" / "summary.json").read_text())
    study = json.loads((DOCS / "results" / "study" / "summary.json").read_text())
    assert readme_table(main) in (GENERATED / "main" / "headline.md").read_text()
    assert headline_table(study) in (GENERATED / "study" / "headline.md").read_text()
    assert "--8<-- \"results/generated/main/headline.md\"" in (DOCS / "index.md").read_text()
    e = main["exact_match"]
    report = (DOCS / "results" / "main" / "report.md").read_text()
    assert f"{e['difference']:+.3f} [{e['ci95'][0]:+.3f}, {e['ci95'][1]:+.3f}]" in report  # the same run


# --- README ----------------------------------------------------------------------------------------

def test_the_readme_is_short_and_its_links_resolve():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert "make run" in readme and "make test" in readme
    for target in re.findall(r"\]\(([^)#\s]+)", readme):
        if "://" not in target:
            assert (REPO / target).exists(), f"README links to {target}, which is not there"


# --- the build -------------------------------------------------------------------------------------

def test_mkdocs_builds_the_site_offline_and_strict(tmp_path):
    out = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ppo = (out / "methods" / "ppo.html").read_text()
    labels = re.findall(r'<label for="__tabbed_\d+_\d+">([^<]+)</label>', ppo)
    assert {"NumPy", "PyTorch", "TensorFlow"} <= set(labels)
    assert "<math" in ppo and "def ppo_clip_loss(" in re.sub(r"<[^>]+>", "", ppo)
    assert "RL beat SFT on held-out exact match" in ppo           # the generated results, included
    assert "loss.ppo_clip_loss" in ppo                            # its parity rows
    assert "SFTRLMATH" not in ppo and "[[tabs" not in ppo and "--8<--" not in ppo
    for lesson in ("attention", "ppo_update", "sft_to_grpo", "reading_the_study"):
        assert (out / "lessons" / f"{lesson}.html").exists()
    # nothing on the site is fetched from the network when it is opened (a plain link may point out)
    for page in out.rglob("*.html"):
        assert not re.search(r'<(script|img|link|iframe|source)\b[^>]*\b(src|href)="(https?:)?//', page.read_text()), page
