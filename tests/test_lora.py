"""LoRA in both frameworks: adapters cross between peft (PyTorch) and Keras 3's enable_lora through
peft's own files, `sftrl ppo --lora-rank` trains only the adapters and the value head (with
--lora-embeddings the embeddings too) and exports a merged plain model, and `sftrl sft --lora-rank`
with the default learning rate learns -- with --lora-embeddings near full fine-tuning -- and exports
its best weights merged."""

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


def prompts_file(builtin_data, tmp_path):
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in builtin_data["prompt.train"]))
    return tmp_path / "prompts.jsonl"


def length_reward(tmp_path) -> str:
    """`--reward FILE.py:FUNCTION`: the completion's length. A briefly trained policy scores 0 on
    the task reward, so its adapters would get no gradient (B would stay 0) and nothing would move;
    length gives every rollout a signal."""
    (tmp_path / "reward.py").write_text("def length(prompt, completion, reference):\n"
                                        "    return len(completion) / 10\n")
    return f"{tmp_path / 'reward.py'}:length"


def test_ppo_with_lora_trains_only_adapters_and_exports_the_merged_model(sft_dir, builtin_data, tokenizer, tmp_path):
    """`sftrl ppo --lora-rank 4`: prints the trainable count (adapters and value head), moves exactly the linear layers
    of the blocks (merged) among the exported weights, and the exported plain model -- loaded by
    load_pretrained and by transformers -- completes prompts as the Keras policy with its
    adapters does."""
    out = tmp_path / "ppo"
    result = run_cli("ppo", "--policy", sft_dir, "--prompts", prompts_file(builtin_data, tmp_path), "--out", out,
                     "--reward", length_reward(tmp_path), "--lora-rank", RANK, "--lora-alpha", ALPHA, "--iterations", 3, "--batch-size", 8,
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


def test_rl_with_lora_embeddings_trains_adapters_value_head_and_embeddings(sft_dir, builtin_data, tmp_path):
    """`sftrl rl --lora-rank 2 --lora-embeddings`: the trainable count is the adapters', the value
    head's and all of `bert.embeddings`' (word, position, token type, LayerNorm); the exported
    weights that moved are exactly the blocks' linear layers and those embeddings -- not the LM
    head's transform or bias -- and they are the last checkpoint's: the embeddings as trained, each
    linear layer W + (alpha / r) B A (float32 rounding of one product and one sum, well inside
    1e-6 at these sizes)."""
    out, rank = tmp_path / "rl", 2
    result = run_cli("rl", "--policy", sft_dir, "--prompts", prompts_file(builtin_data, tmp_path), "--out", out,
                     "--reward", length_reward(tmp_path), "--lora-rank", rank, "--lora-embeddings",
                     "--iterations", 2, "--batch-size", 8, "--minibatch-size", 4, "--max-new-tokens", 6, "--lr", 1e-2,
                     "--no-xla", "--quiet", timeout=600)
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("trainable parameters:"))
    trainable = int(line.split(":")[1].split(" of ")[0].replace(",", ""))
    before, after = load_file(str(sft_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
    embeddings = {k for k in before if k.startswith("bert.embeddings.")}
    assert len(embeddings) == 5  # word, position, token type, LayerNorm weight and bias
    # adapters on query, key, value, attention output (32 -> 32), feed-forward in (32 -> 64) and out
    # (64 -> 32) of both blocks; the value head (32 weights and a bias); the embedding tensors in full
    assert trainable == 2 * (4 * rank * (32 + 32) + 2 * rank * (32 + 64)) + 33 + sum(before[k].size for k in embeddings)
    assert before.keys() == after.keys()
    moved = {k for k in before if not np.array_equal(before[k], after[k])}
    targets = {f"bert.encoder.layer.{i}.{t}" for i in range(2) for t in LORA_TARGETS_BY_ARCHITECTURE["bert"]}
    assert sorted(moved) == sorted({f"{t}.weight" for t in targets} | embeddings)
    last = load_file(str(sorted((out / "checkpoints").glob("iter-*"))[-1] / "policy.safetensors"))
    for name in embeddings:
        np.testing.assert_array_equal(after[name], last[name], err_msg=name)
    scale = 32.0 / rank  # alpha / r, alpha at its default
    for t in targets:
        merged = last[f"{t}.weight"] + scale * last[f"{t}.lora_B.weight"] @ last[f"{t}.lora_A.weight"]
        np.testing.assert_allclose(after[f"{t}.weight"], merged, atol=1e-6, rtol=0, err_msg=t)


@pytest.mark.parametrize("architecture,tied", [("bert", True), ("gpt2", True), ("gpt2", False), ("llama", False),
                                               ("llama", True)])
def test_lora_embeddings_train_the_same_tensors_in_both_frameworks(architecture, tied):
    """`add_lora(..., embeddings=True)` (peft) and `enable_lora(..., embeddings=True)` (Keras) leave
    the same tensors trainable, by Hugging Face name: the adapters of every target layer, the
    embedding layer(s) of LORA_EMBEDDINGS_BY_ARCHITECTURE and an untied LM head; a tied one is the
    token table (one tensor). Without the switch, the adapters only (Keras: and the value head)."""
    from shared.config import GPT2Config, LlamaConfig, ModelConfig
    from tf_impl.architectures import build_model as keras_build_model
    from tf_impl.convert import hf_name
    from torch_impl.architectures import build_model as torch_build_model
    from torch_impl.sft import add_lora

    config = {"bert": ModelConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=48, max_position_embeddings=32, attention_type="causal"),
              "gpt2": GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                 tie_word_embeddings=tied),
              "llama": LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, max_position_embeddings=32, tie_word_embeddings=tied),
              }[architecture]
    embeddings = {"bert": {f"bert.embeddings.{t}" for t in ("word_embeddings.weight", "position_embeddings.weight",
                                                            "token_type_embeddings.weight", "LayerNorm.weight",
                                                            "LayerNorm.bias")},
                  "gpt2": {"transformer.wte.weight", "transformer.wpe.weight"},
                  "llama": {"model.embed_tokens.weight"}}[architecture] | (set() if tied else {"lm_head.weight"})
    for switch in (False, True):
        torch_model = add_lora(torch_build_model(config), RANK, ALPHA, embeddings=switch)
        in_torch = {name.removeprefix("model.").replace(".default.", ".")
                    for name, p in torch_model.named_parameters() if p.requires_grad}
        keras_model = keras_build_model(config)
        tf_lora.enable_lora(keras_model, RANK, ALPHA, embeddings=switch)
        in_keras = {hf_name(v, keras_model)[0] for v in keras_model.trainable_variables}
        adapters = {f"{name}.lora_{m}.weight" for name in lora_module_names(torch_model.model) for m in "AB"}
        assert in_torch == in_keras == adapters | (embeddings if switch else set()), (switch, in_torch ^ in_keras)


# ----------------------------------------------------------------------------- LoRA SFT: learns, and exports merged

STEPS = 40


@pytest.fixture(scope="module")
def lora_and_full(tmp_path_factory, builtin_data, tokenizer):
    """A briefly pretrained causal model (width 64; 60 steps of next-token loss on the built-in text),
    then `sftrl sft` on the built-in SFT data for STEPS steps from it, evaluated every 10 steps: with
    `--lora-rank 16` and every other flag at its default (the learning rate too), the same with
    `--lora-embeddings`, and fully."""
    import torch

    from shared.config import ModelConfig, SFTConfig
    from torch_impl.data import encode_records
    from torch_impl.model import SFTModel
    from torch_impl.sft import train

    root = tmp_path_factory.mktemp("lora_sft")
    config = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=256, max_position_embeddings=64, attention_type="causal",
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=tokenizer.pad_id)
    torch.manual_seed(0)
    text = encode_records(builtin_data["text.train"], "text", tokenizer, "clm", 48)[0]
    train(SFTModel(config), tokenizer, text, [], SFTConfig(steps=60, batch_size=16, warmup_steps=5), root / "init",
          quiet=True, log=lambda *a: None)
    for split in ("sft.train", "sft.eval"):
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in builtin_data[split]))
    runs = {}
    for name, extra in (("lora", ["--lora-rank", 16]), ("lora_embeddings", ["--lora-rank", 16, "--lora-embeddings"]),
                        ("full", [])):
        result = run_cli("sft", "--init", root / "init", "--data", root / "sft.train.jsonl", "--eval-data",
                         root / "sft.eval.jsonl", "--out", root / name, "--steps", STEPS, "--batch-size", 16,
                         "--warmup-steps", 5, "--eval-every", 10, "--quiet", *extra, timeout=300)
        assert result.returncode == 0, result.stderr
        runs[name] = root / name
    return root / "init", runs


def held_out_loss(model, tokenizer, builtin_data):
    """`evaluate`'s held-out loss, as the trainer computes it (the same batches and seed)."""
    from torch_impl.data import encode_records
    from torch_impl.sft import evaluate

    examples = encode_records(builtin_data["sft.eval"], "sft", tokenizer, "clm", 64)[0]
    return evaluate(model, examples, tokenizer, "clm", 0, 16, "cpu")["eval/loss"]


def test_lora_sft_learns_and_with_embeddings_comes_near_full_fine_tuning(lora_and_full, tokenizer, builtin_data):
    """`sftrl sft --lora-rank 16` with the defaults (lr 3x full fine-tuning's, alpha 32, every linear
    layer of both blocks) lowers the best held-out loss below the starting model's; with
    `--lora-embeddings` it gains at least three quarters of what full fine-tuning gains in the same
    steps. Adapters alone gain far less: in a model this small the frozen (tied) embeddings hold them
    back -- a completion after [SEP] is a role the pretrained embeddings never had."""
    init, runs = lora_and_full
    start = held_out_loss(load_pretrained(init).eval(), tokenizer, builtin_data)
    lora, embeddings, full = (json.loads((runs[n] / "trainer_state.json").read_text())
                              for n in ("lora", "lora_embeddings", "full"))
    assert (lora["config"]["lr"], embeddings["config"]["lr"], full["config"]["lr"]) == (3e-3, 3e-3, 1e-3)
    assert (lora["config"]["lora_rank"], lora["config"]["lora_alpha"]) == (16, 32.0)
    assert (lora["config"]["lora_embeddings"], embeddings["config"]["lora_embeddings"]) == (False, True)
    gained = {n: start - s["best_eval_loss"] for n, s in (("lora", lora), ("lora_embeddings", embeddings),
                                                           ("full", full))}
    # B = 0 at the start, so the adapter model's first loss is the start's exactly: any gain is learning.
    # Measured (this setup): adapters 0.04, adapters + embeddings 0.86, full fine-tuning 0.57. The
    # bounds: half the adapters' gain (far above float noise); three quarters of full fine-tuning's,
    # which the adapters alone miss tenfold.
    assert gained["lora"] > 0.02, (start, gained)
    assert gained["lora_embeddings"] >= 0.75 * gained["full"], (start, gained)


@pytest.mark.parametrize("run", ["lora", "lora_embeddings"])
def test_lora_sft_exports_the_best_weights_merged(lora_and_full, tokenizer, builtin_data, run):
    """Exactly the adapters (and with --lora-embeddings all of `bert.embeddings`) train: the
    trainable count, and the exported weights that differ from the starting model's -- the blocks'
    linear layers (adapters merged) and, with the switch, every embedding tensor; nothing else (the
    LM head's transform and bias stay). The exported folder is a plain model (no adapter tensors):
    load_pretrained and transformers' AutoModelForCausalLM read it and give the held-out loss the
    adapter model had at its best evaluation (trainer_state.json's best_eval_loss). Merging,
    W + (alpha / r) B A, changes only the float32 rounding: the logits move by at most about
    3 sqrt(n) 2^-23 of their largest size over the n rounded ops to them, and a token's loss,
    log-softmax, by at most twice that."""
    import torch

    from conftest import bf16_ops_to_logits
    from torch_impl.data import encode_records

    init, runs = lora_and_full
    out = runs[run]
    state = json.loads((out / "trainer_state.json").read_text())
    before, after = load_file(str(init / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert before.keys() == after.keys()
    moved = {k for k in before if not np.array_equal(before[k], after[k])}
    targets = {f"bert.encoder.layer.{i}.{t}.weight" for i in range(2) for t in LORA_TARGETS_BY_ARCHITECTURE["bert"]}
    embeddings = {k for k in before if k.startswith("bert.embeddings.")}  # word, position, token type, LayerNorm
    assert sorted(embeddings) == sorted(f"bert.embeddings.{t}" for t in (
        "word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight", "LayerNorm.weight",
        "LayerNorm.bias"))
    adapters = 2 * 16 * (4 * (64 + 64) + 2 * (64 + 256))  # A (r, in), B (out, r) on both blocks' 6 layers
    if run == "lora":
        assert moved == targets
        assert state["trainable_parameters"] == adapters
    else:
        assert moved == targets | embeddings
        # word (V x 64), position (64 x 64), token type (2 x 64), LayerNorm (2 x 64)
        assert state["trainable_parameters"] == adapters + 64 * (tokenizer.vocab_size + 64 + 2 + 2)
    evaluations = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert state["best_eval_loss"] == min(m["eval/loss"] for m in evaluations if "eval/loss" in m)
    assert not any("lora" in name for name in load_file(str(out / "model.safetensors")))

    class Logits(torch.nn.Module):  # transformers' model, called as ours is
        def __init__(self, hf):
            super().__init__()
            self.hf = hf

        def forward(self, input_ids, attention_mask):
            return self.hf(input_ids=input_ids, attention_mask=attention_mask).logits

    ours = load_pretrained(out).eval()
    hf = Logits(transformers.AutoModelForCausalLM.from_pretrained(out).eval())
    examples = encode_records(builtin_data["sft.eval"], "sft", tokenizer, "clm", 64)[0]
    with torch.no_grad():
        largest = max(float(ours(torch.tensor([e.input_ids])).abs().max()) for e in examples)
    tol = 2 * 3 * bf16_ops_to_logits(2) ** 0.5 * 2.0 ** -23 * largest
    for model in (ours, hf):
        assert abs(held_out_loss(model, tokenizer, builtin_data) - state["best_eval_loss"]) <= tol, tol
