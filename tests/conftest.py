import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.tasks import make_builtin_data
from shared.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def builtin_data():
    """The built-in files at small sizes, as lists of records."""
    sizes = {"sft.train": 80, "sft.eval": 20, "prompt.train": 80, "prompt.eval": 20,
             "preference.train": 40, "preference.eval": 10, "text.train": 80, "text.eval": 10}
    return make_builtin_data(seed=0, sizes=sizes)


@pytest.fixture(scope="session")
def tokenizer(builtin_data):
    texts = [r["text"] for r in builtin_data["text.train"]]
    return Tokenizer.train(texts, vocab_size=300)


def run_cli(*args, cwd=None, timeout=120):
    """Run `python -m sftrl ARGS` in a subprocess; returns the CompletedProcess."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "sftrl", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)
