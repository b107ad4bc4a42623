"""What every report uses: JSONL reading, matplotlib without a display, safe Markdown cells, the
versions a report's numbers were measured with."""

from __future__ import annotations

import html
import json
from pathlib import Path


def read_jsonl(path) -> list[dict]:
    """The records of a JSONL file the project wrote itself (metrics.jsonl, ...); blank lines skipped."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def pyplot():
    """matplotlib.pyplot on the Agg backend (files, no display), imported only when a figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def markdown_cell(text) -> str:
    """Model-written text as one Markdown table cell: HTML-escaped (Markdown viewers render raw
    HTML, and a completion is data, not markup), pipes escaped, on one line."""
    text = html.escape(text or "", quote=True).replace("|", "\\|").replace("\n", " ")
    return text or "∅"


def versions() -> dict:
    """The versions a report's numbers were measured with, and where: the CPU, the commit, the day."""
    import platform

    import keras
    import numpy as np
    import tensorflow as tf
    import torch
    import transformers

    from shared import __version__
    from shared.provenance import provenance
    return {"sftrl": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "tensorflow": tf.__version__, "keras": keras.__version__, "transformers": transformers.__version__,
            "numpy": np.__version__, "platform": platform.platform(), **provenance()}
