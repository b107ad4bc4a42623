"""Model-written text is escaped wherever it can be rendered as HTML, and the project opens no
network listener except on 127.0.0.1."""

import re

from conftest import REPO
from sftrl.reports.common import markdown_cell

ATTACKS = ['<script>alert(1)</script>', '"><img src=x onerror=alert(1)>']


def test_report_cells_escape_model_text():
    for attack in ATTACKS:
        cell = markdown_cell(attack + " | next\nline")
        assert "<" not in cell and ">" not in cell and '"' not in cell
        assert "\\|" in cell and "\n" not in cell  # still one Markdown cell
    assert markdown_cell("<script>alert(1)</script>") == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert markdown_cell("") == "∅"


def test_no_listener_on_other_interfaces():
    """A server of ours (there is none today) must bind to 127.0.0.1: scan the sources."""
    sources = [p for d in ("shared", "torch_impl", "tf_impl", "sftrl", "benchmarks") for p in (REPO / d).rglob("*.py")]
    assert len(sources) > 30
    for path in sources:
        text = path.read_text()
        assert "0.0.0.0" not in text, path
        for match in re.finditer(r"\.bind\(|HTTPServer\(|serve_forever|create_server\(", text):
            line = text[text.rfind("\n", 0, match.start()) + 1:text.find("\n", match.end())]
            assert "127.0.0.1" in line or "localhost" in line, f"{path}: {line.strip()}"
