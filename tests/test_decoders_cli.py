"""The commands on a downloaded decoder folder, as a user runs them:
`sftrl sft --init DIR` -> `sftrl rl --algorithm grpo --policy ...` -> `sftrl eval`, for a GPT-2 and a
Qwen2-style folder (built offline by `tests/hf_folders.py`), and each exported folder loads in
`AutoModelForCausalLM` + `AutoTokenizer` with our logits."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from conftest import SMALL_SIZES, run_cli
from hf_folders import make_folder
from shared.tasks import write_builtin_data
from shared.tokenizer import Tokenizer
from torch_impl.checkpoint import load_pretrained


def assert_loads_in_transformers_with_our_logits(folder):
    ours = load_pretrained(folder)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer, their_tokenizer = Tokenizer.load(folder), transformers.AutoTokenizer.from_pretrained(folder)
    text = "copy: a b c"
    ids = [tokenizer.cls_id] + tokenizer.encode(text, add_special_tokens=False) + [tokenizer.sep_id]
    assert their_tokenizer(text, add_special_tokens=False).input_ids == ids[1:-1]
    with torch.no_grad():
        diff = theirs(input_ids=torch.tensor([ids])).logits - ours(torch.tensor([ids]))
    assert diff.abs().max().item() <= 1e-5


@pytest.mark.parametrize("kind", ["gpt2", "qwen2"])
def test_sft_then_grpo_then_eval_on_a_transformers_folder(kind, tmp_path):
    folder = make_folder(kind, tmp_path / kind)
    data = tmp_path / "data"
    write_builtin_data(data, seed=0, sizes=SMALL_SIZES)
    sft, rl, ev = tmp_path / "sft", tmp_path / "rl", tmp_path / "eval"
    result = run_cli("sft", "--init", folder, "--data", data / "sft.train.jsonl", "--eval-data", data / "sft.eval.jsonl",
                     "--out", sft, "--steps", "20", "--eval-every", "10", "--batch-size", "8", "--quiet", timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads((sft / "config.json").read_text())["model_type"] == kind
    assert_loads_in_transformers_with_our_logits(sft)

    # A reward that differs between the samples of a group, so that GRPO's advantages are not all 0
    # (the 20-step SFT model earns no task credit yet): the length of the completion.
    (tmp_path / "length.py").write_text("def reward(prompt, completion, reference):\n    return float(len(completion))\n")
    result = run_cli("rl", "--algorithm", "grpo", "--policy", sft, "--prompts", data / "prompt.train.jsonl",
                     "--reward", f"{tmp_path / 'length.py'}:reward", "--out", rl, "--iterations", "2", "--batch-size", "8", "--group-size", "4",
                     "--minibatch-size", "8", "--max-new-tokens", "8", "--no-xla", "--quiet", timeout=300)
    assert result.returncode == 0, result.stderr
    assert len((rl / "metrics.jsonl").read_text().splitlines()) == 2
    assert_loads_in_transformers_with_our_logits(rl)
    changed = [n for n, t in load_pretrained(rl).state_dict().items()
               if not torch.equal(t, load_pretrained(sft).state_dict()[n])]
    assert changed, "two GRPO iterations left every weight as it was"

    result = run_cli("eval", "--model", sft, "--model", rl, "--prompts", data / "prompt.eval.jsonl", "--out", ev,
                     "--max-new-tokens", "8", timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads((ev / "eval.json").read_text())
    assert len(report["models"]) == 2


def test_lora_bf16_reward_model_and_dpo_on_a_llama_folder(tmp_path):
    """The rest of the commands on a Llama folder (GQA, untied): SFT with LoRA on every linear layer
    in bfloat16 autocast, its merged export loading in transformers; a reward model on its
    backbone; DPO from it; GRPO with Keras LoRA in mixed bfloat16."""
    folder = make_folder("llama", tmp_path / "llama")
    data = tmp_path / "data"
    write_builtin_data(data, seed=0, sizes=SMALL_SIZES)
    sft = tmp_path / "sft"
    result = run_cli("sft", "--init", folder, "--data", data / "sft.train.jsonl", "--out", sft, "--steps", "6",
                     "--batch-size", "8", "--lora-rank", "4", "--lr", "1e-2", "--precision", "bf16", "--quiet",
                     timeout=300)
    assert result.returncode == 0, result.stderr
    # 2 layers x (q, k, v, o, gate, up, down) adapters: A (4, in) + B (out, 4) each
    adapters = 2 * 4 * ((32 + 32) + (32 + 16) + (32 + 16) + (32 + 32) + 3 * (32 + 64))
    assert f"trainable parameters: {adapters:,} of" in result.stdout
    assert_loads_in_transformers_with_our_logits(sft)
    before, after = load_pretrained(folder).state_dict(), load_pretrained(sft).state_dict()
    moved = {n for n in before if not torch.equal(before[n], after[n])}
    assert moved and all(n.endswith("proj.weight") for n in moved), sorted(moved)[:3]

    result = run_cli("reward-model", "--init", sft, "--data", data / "preference.train.jsonl", "--out",
                     tmp_path / "rm", "--epochs", "1", "--batch-size", "8", "--quiet", timeout=300)
    assert result.returncode == 0, result.stderr
    from safetensors import safe_open
    with safe_open(str(tmp_path / "rm" / "model.safetensors"), "np") as f:
        names = set(f.keys())
    assert "reward_head.dense.weight" in names and "model.layers.1.mlp.down_proj.weight" in names

    result = run_cli("dpo", "--init", sft, "--data", data / "preference.train.jsonl", "--out", tmp_path / "dpo",
                     "--steps", "4", "--batch-size", "4", "--quiet", timeout=300)
    assert result.returncode == 0, result.stderr
    assert_loads_in_transformers_with_our_logits(tmp_path / "dpo")

    (tmp_path / "length.py").write_text("def reward(prompt, completion, reference):\n    return float(len(completion))\n")
    result = run_cli("rl", "--algorithm", "grpo", "--policy", sft, "--prompts", data / "prompt.train.jsonl",
                     "--reward", f"{tmp_path / 'length.py'}:reward", "--out", tmp_path / "rl", "--iterations", "2",
                     "--batch-size", "8", "--group-size", "4", "--minibatch-size", "8", "--max-new-tokens", "8",
                     "--lora-rank", "4", "--precision", "bf16", "--no-xla", "--quiet", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "self_attn.q_proj" in result.stdout and f"trainable parameters: {adapters:,} of" in result.stdout
    assert_loads_in_transformers_with_our_logits(tmp_path / "rl")
