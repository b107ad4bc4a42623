"""LoRA in both frameworks: adapters cross between peft (PyTorch) and Keras 3's enable_lora through
peft's own files, and `sftrl ppo --lora-rank` trains only the adapters and the value head and
exports a merged plain model."""

import json

import numpy as np
import peft
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from conftest import run_cli, train_causal_sft
from shared.constants import LORA_TARGETS_BY_ARCHITECTURE
from tf_impl import lora as tf_lora
from tf_impl import rl_run
from tf_impl.convert import assign_numpy_state_dict, load_safetensors
from tf_impl.generate import greedy_completions as keras_greedy
from tf_impl.model import PolicyModel
from torch_impl.checkpoint import load_pretrained
from torch_impl.generate import greedy_completions as torch_greedy
from torch_impl.sft import lora_module_names

RANK, ALPHA = 4, 8.0


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory, builtin_data, tokenizer):
    return train_causal_sft(tmp_path_factory.mktemp("sft"), tokenizer, builtin_data["sft.train"], 32, steps=40)


def random_adapters(model_names, rng):
    """Non-zero adapters for every name (B starts at zero in both libraries: set it)."""
    return {name: rng.normal(0.0, 0.2, size=shape).astype(np.float32) for name, shape in model_names.items()}


def test_adapters_cross_between_peft_files_and_keras(sft_dir, tmp_path):
    """PyTorch -> Keras: a peft model's `save_pretrained` adapter file loads into Keras' LoRA
    layers and gives peft's logits. Keras -> PyTorch: `tf_impl.lora.lora_state_dict`, saved as
    safetensors, loads with peft's own `set_peft_model_state_dict` and gives Keras' logits."""
    ids = np.array([[2, 40, 41, 42, 43, 3, 50, 51], [2, 60, 61, 3, 70, 0, 0, 0]])
    mask = (ids != 0).astype(np.int64)
    plain = load_pretrained(sft_dir).eval()
    config = peft.LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=lora_module_names(plain))
    torch_model = peft.get_peft_model(plain, config)
    keras_model = PolicyModel(torch_model.base_model.model.config)
    load_safetensors(keras_model, sft_dir / "model.safetensors")
    tf_lora.enable_lora(keras_model, RANK, ALPHA)
    rng = np.random.default_rng(0)

    # PyTorch -> Keras
    state = peft.get_peft_model_state_dict(torch_model)
    peft.set_peft_model_state_dict(torch_model, {k: torch.tensor(v) for k, v in random_adapters(
        {k: tuple(v.shape) for k, v in state.items()}, rng).items()})
    torch_model.save_pretrained(tmp_path / "adapter")
    # A and B for every linear layer of every block, and nothing else (not the LM head's transform)
    targets = [f"bert.encoder.layer.{i}.{t}" for i in range(2) for t in LORA_TARGETS_BY_ARCHITECTURE["bert"]]
    written = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert sorted(written) == sorted(f"base_model.model.{t}.lora_{m}.weight" for t in targets for m in "AB")
    tf_lora.load_lora_state_dict(keras_model, load_file(str(tmp_path / "adapter" / "adapter_model.safetensors")))
    with torch.no_grad():
        expected = torch_model(torch.tensor(ids), torch.tensor(mask)).numpy()
    np.testing.assert_allclose(np.asarray(keras_model(ids, mask)), expected, atol=1e-5, rtol=0)

    # Keras -> PyTorch
    for variable in keras_model.weights:
        if "lora_kernel" in variable.path:
            variable.assign(rng.normal(0.0, 0.2, size=variable.shape).astype(np.float32))
    save_file(tf_lora.lora_state_dict(keras_model), str(tmp_path / "keras_adapter.safetensors"))
    result = peft.set_peft_model_state_dict(torch_model, {k: torch.tensor(v) for k, v in load_file(
        str(tmp_path / "keras_adapter.safetensors")).items()})
    assert not result.unexpected_keys
    with torch.no_grad():
        got = torch_model(torch.tensor(ids), torch.tensor(mask)).numpy()
    np.testing.assert_allclose(got, np.asarray(keras_model(ids, mask)), atol=1e-5, rtol=0)
    assert np.abs(got - expected).max() > 1e-2  # the second adapters really are different ones


def test_ppo_with_lora_trains_only_adapters_and_exports_the_merged_model(sft_dir, builtin_data, tokenizer, tmp_path):
    """`sftrl ppo --lora-rank 4`: prints the trainable count (adapters and value head), moves exactly the linear layers
    of the blocks (merged) among the exported weights, and the exported plain model -- loaded by
    load_pretrained and by transformers -- completes prompts as the Keras policy with its
    adapters does."""
    out = tmp_path / "ppo"
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in builtin_data["prompt.train"]))
    result = run_cli("ppo", "--policy", sft_dir, "--prompts", tmp_path / "prompts.jsonl", "--out", out,
                     "--lora-rank", RANK, "--lora-alpha", ALPHA, "--iterations", 3, "--batch-size", 8,
                     "--minibatch-size", 4, "--max-new-tokens", 6, "--lr", 1e-2, "--no-xla", "--quiet", timeout=600)
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("trainable parameters:"))
    trainable, total = (int(x.replace(",", "")) for x in line.split(":")[1].split("(")[0].split(" of "))
    # A (r x in), B (out x r) on query, key, value, attention output (32 -> 32), feed-forward in (32 -> 64)
    # and out (64 -> 32) of both blocks, and the value head (32 weights and a bias)
    assert trainable == 2 * (4 * RANK * (32 + 32) + 2 * RANK * (32 + 64)) + 33 and trainable < total / 5
    before, after = load_file(str(sft_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert before.keys() == after.keys()
    moved = {k for k in before if not np.array_equal(before[k], after[k])}
    targets = [f"bert.encoder.layer.{i}.{t}.weight" for i in range(2) for t in LORA_TARGETS_BY_ARCHITECTURE["bert"]]
    assert sorted(moved) == sorted(targets)  # every linear layer of every block, merged; nothing else

    # the Keras policy with its (unmerged) adapters, as the last checkpoint holds it
    policy, _ = rl_run.load_policy_and_reference(sft_dir, lora=(RANK, ALPHA), log=lambda *a: None)
    checkpoint = sorted((out / "checkpoints").glob("iter-*"))[-1]
    assign_numpy_state_dict(policy, load_file(str(checkpoint / "policy.safetensors")))
    prompts = [r["prompt"] for r in builtin_data["prompt.eval"]]
    exported = load_pretrained(out)
    assert torch_greedy(exported, tokenizer, prompts, 6) == keras_greedy(policy, tokenizer, prompts, 6)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([[2, 40, 41, 42, 3]])
    with torch.no_grad():
        np.testing.assert_allclose(hf(ids).logits.numpy(), exported(ids).numpy(), atol=1e-5, rtol=0)
