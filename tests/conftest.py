import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.cpu import onednn_bf16_would_crash_tensorflow
from shared.tasks import make_builtin_data
from shared.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[1]


SMALL_SIZES = {"sft.train": 80, "sft.eval": 20, "prompt.train": 80, "prompt.eval": 20,
               "preference.train": 40, "preference.eval": 10, "text.train": 80, "text.eval": 10}


@pytest.fixture(scope="session")
def builtin_data():
    """The built-in files at small sizes, as lists of records."""
    return make_builtin_data(seed=0, sizes=SMALL_SIZES)


@pytest.fixture(scope="session")
def tokenizer(builtin_data):
    # trained on the texts it always was (the old text.train, now text_contaminated.train), so the
    # tests' token ids did not move when text.train became the clean corpus
    texts = [r["text"] for r in builtin_data["text_contaminated.train"]]
    return Tokenizer.train(texts, vocab_size=300)


def run_cli(*args, cwd=None, timeout=120):
    """Run `python -m sftrl ARGS` in a subprocess; returns the CompletedProcess."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "sftrl", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)


def tf_bf16_env() -> dict:
    """The environment for a subprocess that runs TensorFlow in bfloat16: this one, with
    TensorFlow's oneDNN ops off where they would crash on bfloat16 under this CPU setting, as
    `sftrl ppo --precision bf16` does (see `shared.cpu.onednn_bf16_would_crash_tensorflow`)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if onednn_bf16_would_crash_tensorflow():
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    return env


def bf16_result(module: str, function: str, *args, run_here):
    """`module.function(*args)`'s JSON result, computed where TensorFlow's bfloat16 runs: in a
    subprocess with its oneDNN ops off where they would crash on bfloat16 under this CPU setting
    (see `tf_bf16_env`), else here, by `run_here()`."""
    if not onednn_bf16_would_crash_tensorflow():
        return run_here()
    import json
    code = (f"import json, sys; sys.path.insert(0, 'tests'); import {module} as t; "
            f"print(json.dumps(t.{function}(*{args!r})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=tf_bf16_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# bfloat16 keeps 8 significant bits: rounding a value moves it by up to 2^-9 of itself, and an op
# that rounds its inputs and its output moves its result by up to about BF16_UNIT = 2^-8 of it.
BF16_UNIT = 2.0 ** -8


def bf16_ops_to_logits(num_layers: int) -> int:
    """Rounded ops on the longest path from the ids to the log-probabilities of the post-LN model:
    embedding sum + LayerNorm (2); per block Q/K/V projection, Q K^T, softmax, weights @ V, output
    projection + residual, LayerNorm, feed-forward in, GELU, feed-forward out + residual,
    LayerNorm (10, counted 12 for the adds); head dense, GELU, LayerNorm, tied projection,
    log-softmax (5)."""
    return 12 * num_layers + 7


def bf16_relative_error_bound(num_layers: int, backward: bool = False) -> float:
    """How far a bfloat16 result may be from the float32 one, relative to its size.

    n rounded ops of relative error <= BF16_UNIT each, errors of independent roundings adding like
    a random walk: about sqrt(n) BF16_UNIT; the backward pass runs the path again (2n ops). The
    bound allows 3 times that: 6.5 % forward, 9.2 % for a gradient, for 2 layers. It depends on
    the arithmetic only, not on which kernels (AVX-512 BF16, AVX2, oneDNN or not) a CPU runs.
    """
    n = bf16_ops_to_logits(num_layers) * (2 if backward else 1)
    return 3 * n ** 0.5 * BF16_UNIT


def train_causal_sft(out, tokenizer, records, hidden_size: int, steps: int):
    """A small causal SFT model (2 layers, no dropout) trained on `records`, exported to `out`."""
    import torch

    from shared.config import ModelConfig, SFTConfig
    from torch_impl.model import SFTModel
    from torch_impl.data import encode_records
    from torch_impl.sft import train

    config = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden_size, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=2 * hidden_size, max_position_embeddings=48,
                         attention_type="causal", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    examples = encode_records(records, "sft", tokenizer, "clm", 32)[0]
    train(SFTModel(config), tokenizer, examples, [], SFTConfig(steps=steps, batch_size=16, lr=3e-3), out,
          quiet=True, log=lambda *a: None)
    return out
