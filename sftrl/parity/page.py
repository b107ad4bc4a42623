"""`sftrl parity --html PATH`: the parity registry as one page to teach from.

Per case: the formula, the note, the measured error per dtype against its tolerance, and the
NumPy, PyTorch and TensorFlow sources in three columns, corresponding lines on the same row.
One self-contained file (inline style, no script, no fetch): it opens offline.

Lines are aligned with PyTorch as the pivot: `difflib` matches PyTorch's lines with each other
column's after taking the framework prefixes out (`torch.`, `tf.`, `np.`, `F.`, `keras.ops.` ...),
so `x = torch.cat(...)` and `x = tf.concat(...)` differ but `q = self.split_heads(self.query(h))`
lines up with its twin; unmatched lines get a row of their own.
"""

from __future__ import annotations

import difflib
import html
import inspect
import re

from sftrl.parity.registry import DTYPES, source_location

COLUMNS = ("NumPy", "PyTorch", "TensorFlow")
_FRAMEWORK_PREFIX = re.compile(r"\b(torch\.nn\.functional|torch|tf\.nn|tf\.math|tf|np|F|keras\.ops|keras|ref)\.")

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #1b1b1b; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2.5em; border-top: 1px solid #ccc; padding-top: 1em; }
.formula { font-family: ui-monospace, monospace; background: #f4f4f4; padding: .4em .6em; display: inline-block; }
.note { color: #444; max-width: 70em; }
table.errors { border-collapse: collapse; margin: .6em 0; }
table.errors td, table.errors th { border: 1px solid #ccc; padding: .2em .6em; text-align: right; }
td.pass { color: #1a7f37; } td.fail { color: #cf222e; font-weight: bold; }
table.code { border-collapse: collapse; width: 100%; table-layout: fixed; font-size: 12px; }
table.code th { text-align: left; background: #eaeef2; padding: .3em; font-weight: normal; }
table.code td { font-family: ui-monospace, monospace; white-space: pre; overflow: hidden; vertical-align: top;
                padding: 0 .4em; border-left: 1px solid #ddd; }
table.code tr.matched td { background: #f6fbf6; }
nav a { margin-right: .8em; }
"""


def _normalise(line: str) -> str:
    """A line with its comment, framework prefixes and spacing taken out, for matching."""
    return re.sub(r"\s+", "", _FRAMEWORK_PREFIX.sub("", line.split("  #")[0]))


def _pairs(pivot: list[str], other: list[str]) -> list[tuple[int | None, int | None]]:
    """(pivot line, other line) index pairs in order; None where a line has no partner."""
    matcher = difflib.SequenceMatcher(None, [_normalise(x) for x in pivot], [_normalise(x) for x in other],
                                      autojunk=False)
    pairs = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        left, right = list(range(i1, i2)), list(range(j1, j2))
        if op == "equal":
            pairs += list(zip(left, right))
        else:  # replace, insert, delete: side by side as far as both go, then one-sided
            n = max(len(left), len(right))
            pairs += [(left[k] if k < len(left) else None, right[k] if k < len(right) else None) for k in range(n)]
    return pairs


def align(numpy_lines: list[str], torch_lines: list[str], tf_lines: list[str]) -> list[tuple]:
    """Rows (numpy line, torch line, tf line, matched?) with corresponding lines on one row."""
    def partners(pairs):
        """For each pivot index: the other side's lines that come just before it, and its partner."""
        before, partner, pending = {}, {}, []
        for i, j in pairs:
            if i is None:
                pending.append(j)
            else:
                before[i], partner[i], pending = pending, j, []
        return before, partner, pending

    np_before, np_partner, np_tail = partners(_pairs(torch_lines, numpy_lines))
    tf_before, tf_partner, tf_tail = partners(_pairs(torch_lines, tf_lines))
    rows = []

    def extra(np_idx, tf_idx):
        for k in range(max(len(np_idx), len(tf_idx))):
            n = numpy_lines[np_idx[k]] if k < len(np_idx) else ""
            t = tf_lines[tf_idx[k]] if k < len(tf_idx) else ""
            rows.append((n, "", t, False))
    for i, line in enumerate(torch_lines):
        extra(np_before.get(i, []), tf_before.get(i, []))
        n = numpy_lines[np_partner[i]] if np_partner.get(i) is not None else ""
        t = tf_lines[tf_partner[i]] if tf_partner.get(i) is not None else ""
        matched = any(other and _normalise(other) == _normalise(line) for other in (n, t)) and line.strip() != ""
        rows.append((n, line, t, matched))
    extra(np_tail, tf_tail)
    return rows


def _source(obj) -> tuple[str, list[str]]:
    if obj is None:
        return "", []
    return source_location(obj), inspect.getsource(obj).rstrip().splitlines()


def case_section(case, results: dict) -> str:
    """One case: heading, formula, note, errors per dtype, aligned sources."""
    out = [f'<section id="{html.escape(case.name)}">',
           f"<h2>{html.escape(case.name)} <small>(level: {html.escape(case.level)})</small></h2>",
           f'<p class="formula">{html.escape(case.formula)}</p>']
    if case.note:
        out.append(f'<p class="note">{html.escape(case.note)}</p>')
    out.append('<table class="errors"><tr><th>dtype</th><th>max abs error</th><th>rel. to max abs value</th>'
               '<th>tolerance</th><th>pass</th></tr>')
    for dtype in DTYPES:
        r = results.get((case.name, dtype))
        if r is None:
            continue
        bound = f"{r.tol:.0e}" if r.min_error is None else f"[{r.min_error:.0e}, {r.tol:.0e}]"
        verdict = '<td class="pass">yes</td>' if r.passed else '<td class="fail">NO</td>'
        out.append(f'<tr class="result" data-dtype="{dtype}"><td>{dtype}</td><td class="max-abs">{r.max_abs:.2e}</td>'
                   f"<td>{r.max_rel:.2e}</td><td>{bound}</td>{verdict}</tr>")
    out.append("</table>")
    sources = [_source(obj) for obj in (case.shows or (case.numpy, case.torch, case.tf))]
    header = "".join(f"<th>{label}<br><code>{html.escape(where) or '&mdash;'}</code></th>"
                     for label, (where, _) in zip(COLUMNS, sources))
    out.append(f'<table class="code"><tr>{header}</tr>')
    for n, t, f, matched in align(*(lines for _, lines in sources)):
        cells = "".join(f"<td>{html.escape(x)}</td>" for x in (n, t, f))
        out.append(f'<tr class="matched">{cells}</tr>' if matched else f"<tr>{cells}</tr>")
    out.append("</table></section>")
    return "\n".join(out)


def page(cases, results) -> str:
    """The whole page. results: the `Result`s of `sftrl.parity.run_case` for these cases."""
    by_key = {(r.case, r.dtype): r for r in results}
    passed = sum(r.passed for r in results)
    nav = " ".join(f'<a href="#{html.escape(c.name)}">{html.escape(c.name)}</a>' for c in cases)
    body = "\n".join(case_section(case, by_key) for case in cases)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>sftrl parity: NumPy, PyTorch, TensorFlow</title><style>{STYLE}</style></head><body>\n"
            f"<h1>The same math in NumPy, PyTorch and TensorFlow</h1>\n"
            f"<p>{len(cases)} cases, {passed} of {len(results)} rows within tolerance. Each case: the formula, "
            f"the largest error measured in each precision and its tolerance, and the three implementations, "
            f"corresponding lines side by side (shaded where they read the same).</p>\n"
            f"<nav>{nav}</nav>\n{body}\n</body></html>\n")
