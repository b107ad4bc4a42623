"""report.html: a report's Markdown as one self-contained page (style inline, images embedded)."""

from __future__ import annotations

import html
from pathlib import Path

from shared.io import atomic_write_text

HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 70em; margin: 2em auto; padding: 0 1em; line-height: 1.45; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; }}
th {{ background: #f3f3f3; }}
td {{ font-variant-numeric: tabular-nums; }}
img {{ max-width: 100%; }}
pre {{ background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }}
</style></head>
<body>
{body}
</body></html>
"""


def write_html(out, markdown_text: str, title: str):
    """OUT/report.html: the report's Markdown rendered (python-markdown, with tables), each image
    embedded as a data: URI and the style inline -- one file that opens offline in a browser.
    Model-written text reaches the Markdown already HTML-escaped (`sftrl.reports.common.markdown_cell`)."""
    import base64
    import re

    import markdown

    out = Path(out)
    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code"])

    def embed(match):
        data = base64.b64encode((out / match.group(1)).read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{data}"'
    body = re.sub(r'src="([^":]+\.png)"', embed, body)
    atomic_write_text(out / "report.html", HTML_PAGE.format(title=html.escape(title), body=body))
    return out / "report.html"

