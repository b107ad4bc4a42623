"""Bad input through the command line, one subprocess per case: exit code 2, exactly one line
`error: ...` on stderr naming the file, line or flag, no traceback, and nothing in --out that
looks like a finished run."""

import json

import pytest
import torch
from safetensors.torch import save_file

from conftest import run_cli
from shared.config import ModelConfig
from shared.constants import TIED_NAMES
from torch_impl.checkpoint import save_pretrained
from torch_impl.model import SFTModel

SFT_RECORD = {"prompt": "copy: a b", "completion": "a b", "task": "copy"}
FINISHED = ("model.safetensors", "trainer_state.json", "eval.json", "report.md")


@pytest.fixture(scope="module")
def ws(tmp_path_factory, builtin_data, tokenizer):
    """A workspace of good and bad files."""
    d = tmp_path_factory.mktemp("bad_input")
    lines = lambda records: "".join(json.dumps(r) + "\n" for r in records)
    (d / "sft.jsonl").write_text(lines(builtin_data["sft.train"]))
    (d / "prompts.jsonl").write_text(lines(builtin_data["prompt.train"][:20]))
    (d / "invalid_json.jsonl").write_text(lines([SFT_RECORD] * 2) + '{"prompt": "copy: a", "completion": \n')
    (d / "missing_field.jsonl").write_text(lines([SFT_RECORD, {"prompt": "copy: a"}]))
    (d / "extra_field.jsonl").write_text(lines([{**SFT_RECORD, "answer": "a b"}]))
    (d / "wrong_type.jsonl").write_text(lines([SFT_RECORD, SFT_RECORD, {"prompt": 7, "completion": "7"}]))
    (d / "empty.jsonl").write_text("\n\n")
    (d / "latin1.jsonl").write_bytes(b'{"prompt": "copy: a", "completion": "a"}\n{"prompt": "caf\xe9", '
                                     b'"completion": "x"}\n')
    (d / "not_a_list.jsonl").write_text('["prompt", "completion"]\n')
    tokenizer.save(d / "tokenizer.json")
    small = dict(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=64, pad_token_id=0)
    (d / "config.json").write_text(json.dumps(small))
    (d / "heads.json").write_text(json.dumps({**small, "hidden_size": 30, "num_attention_heads": 4}))
    (d / "vocab.json").write_text(json.dumps({**small, "vocab_size": tokenizer.vocab_size + 7}))
    (d / "negative.json").write_text(json.dumps({**small, "num_hidden_layers": -1}))
    (d / "broken.json").write_text('{"vocab_size": 300,\n "hidden_size": }')
    gpt2 = d / "gpt2"  # a checkpoint of another architecture
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
                                                  "n_embd": 32, "n_head": 2, "n_layer": 1, "vocab_size": 300}))
    save_file({"transformer.wte.weight": torch.zeros(300, 32), "transformer.h.0.attn.c_attn.weight":
               torch.zeros(32, 96)}, gpt2 / "model.safetensors")
    shapes = d / "wrong_shapes"  # our architecture, weights of another size
    shapes.mkdir()
    (shapes / "config.json").write_text(json.dumps(small))
    state = {k: v for k, v in SFTModel(ModelConfig(**small)).state_dict().items() if k not in TIED_NAMES}
    state["bert.embeddings.word_embeddings.weight"] = torch.zeros(10, 8)
    save_file(state, shapes / "model.safetensors")
    (d / "a-file").write_text("not a directory\n")
    causal = d / "causal"  # a small generating model, for the commands that complete prompts
    save_pretrained(SFTModel(ModelConfig(**{**small, "attention_type": "causal"})), causal)
    tokenizer.save(causal / "tokenizer.json")
    (d / "long_prompt.jsonl").write_text(lines([{"prompt": "copy: a b"}, {"prompt": "copy: " + "x y " * 40}]))
    return d


def sft(ws, *extra, data="sft.jsonl"):
    return ["sft", "--data", ws / data, "--out", ws / "out", "--steps", "2", "--quiet", *extra]


CASES = {
    # ---- data files
    "missing file": (lambda w: sft(w, data="nope.jsonl"), "nope.jsonl: no such file"),
    "directory instead of file": (lambda w: ["sft", "--data", w, "--out", w / "out"], "is a directory"),
    "invalid JSON on line 3": (lambda w: sft(w, data="invalid_json.jsonl"), "invalid_json.jsonl:3: invalid JSON"),
    "missing field": (lambda w: sft(w, data="missing_field.jsonl"), "missing_field.jsonl:2: field 'completion': missing"),
    "extra field": (lambda w: sft(w, data="extra_field.jsonl"), "extra_field.jsonl:1: field 'answer': unexpected field"),
    "wrong-type field": (lambda w: sft(w, data="wrong_type.jsonl"), "wrong_type.jsonl:3: field 'prompt'"),
    "empty file": (lambda w: sft(w, data="empty.jsonl"), "empty.jsonl: empty file"),
    "non-UTF-8 bytes": (lambda w: sft(w, data="latin1.jsonl"), "latin1.jsonl:2: not UTF-8"),
    "record not an object": (lambda w: sft(w, data="not_a_list.jsonl"), "not_a_list.jsonl:1:"),
    "eval data invalid": (lambda w: sft(w, "--eval-data", w / "invalid_json.jsonl"), "invalid_json.jsonl:3:"),
    "prompt records given as sft data": (lambda w: sft(w, data="prompts.jsonl"), "prompts.jsonl:1: field 'reference': unexpected field for a 'sft' record"),
    # ---- models, tokenizers, checkpoints
    "tokenizer/model vocabulary mismatch": (
        lambda w: sft(w, "--tokenizer", w / "tokenizer.json", "--model-config", w / "vocab.json"),
        "the model's vocabulary has"),
    "heads do not divide hidden size": (lambda w: sft(w, "--model-config", w / "heads.json"),
                                        "num_attention_heads: must divide hidden_size (30 is not divisible by 4)"),
    "negative layer count": (lambda w: sft(w, "--model-config", w / "negative.json"), "num_hidden_layers"),
    "model config not JSON": (lambda w: sft(w, "--model-config", w / "broken.json"), "broken.json"),
    "checkpoint of another architecture": (lambda w: sft(w, "--init", w / "gpt2", "--tokenizer", w / "tokenizer.json"),
                                           "gpt2"),
    "checkpoint with wrong shapes": (lambda w: sft(w, "--init", w / "wrong_shapes", "--tokenizer",
                                                   w / "tokenizer.json"), "bert.embeddings.word_embeddings.weight"),
    "tokenizer file is not a tokenizer": (lambda w: sft(w, "--tokenizer", w / "sft.jsonl"), "sft.jsonl"),
    "--resume without a checkpoint": (lambda w: sft(w, "--resume"), "--resume: no checkpoint in"),
    # ---- flags
    "zero learning rate": (lambda w: sft(w, "--lr", "0"), "--lr: must be in (0.0, inf], got 0.0"),
    "negative learning rate": (lambda w: sft(w, "--lr", "-0.001"), "--lr: must be in (0.0, inf], got -0.001"),
    "zero batch size": (lambda w: sft(w, "--batch-size", "0"), "--batch-size: must be >= 1, got 0"),
    "negative batch size": (lambda w: sft(w, "--batch-size", "-4"), "--batch-size: must be >= 1, got -4"),
    "zero steps": (lambda w: sft(w, "--steps", "0"), "--steps: must be >= 1, got 0"),
    "negative steps": (lambda w: sft(w, "--steps", "-3"), "--steps: must be >= 1, got -3"),
    "not a number": (lambda w: sft(w, "--lr", "fast"), "--lr: invalid float value: 'fast'"),
    "unknown task": (lambda w: sft(w, "--tasks", "translate"), "--tasks: unknown task 'translate'"),
    "unknown objective": (lambda w: sft(w, "--objective", "rlhf"), "--objective: invalid choice: 'rlhf'"),
    "output under a file": (lambda w: ["sft", "--data", w / "sft.jsonl", "--out", w / "a-file" / "run", "--steps", "1",
                                       "--quiet"], "a-file"),
    # ---- other commands
    "eval of a missing model": (lambda w: ["eval", "--model", w / "no-model", "--prompts", w / "prompts.jsonl",
                                           "--out", w / "out"], "no-model"),
    "prompt longer than the context": (lambda w: ["eval", "--model", w / "causal", "--prompts", w / "long_prompt.jsonl",
                                                  "--out", w / "out"], "long_prompt.jsonl:2: the prompt is"),
    "tokenizer vocabulary too small": (lambda w: ["tokenizer", "--data", w / "sft.jsonl", "--vocab-size", "3",
                                                  "--out", w / "out" / "t.json"], "--vocab-size"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_error_line_exit_2(ws, name):
    make_args, fragment = CASES[name]
    result = run_cli(*make_args(ws))
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    for name in FINISHED:
        assert not (ws / "out" / name).exists(), name


def test_the_table_has_at_least_twenty_cases():
    assert len(CASES) >= 20
