"""The SFT trainer: it learns, LoRA trains adapters only, resume is bitwise, exports load in transformers."""

import json

import numpy as np
import pytest
import torch
import transformers

from conftest import run_cli
from shared.config import ModelConfig, SFTConfig
from shared.constants import LORA_TARGETS_BY_ARCHITECTURE
from shared.data import plan_epoch
from torch_impl.checkpoint import load_pretrained
from torch_impl.model import SFTModel
from torch_impl.data import encode_records
from torch_impl.sft import train


def tiny_config(tokenizer, attention_type="causal", **overrides):
    values = dict(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                  num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                  pad_token_id=tokenizer.pad_id, attention_type=attention_type)
    values.update(overrides)
    return ModelConfig(**values)


def quiet_train(model, tokenizer, examples, eval_examples, config, out, **kwargs):
    return train(model, tokenizer, examples, eval_examples, config, out, quiet=True, log=lambda *a: None,
                 **kwargs)


@pytest.fixture(scope="module")
def sft_examples(builtin_data, tokenizer):
    return encode_records(builtin_data["sft.train"], "sft", tokenizer, "clm", 48)[0]


def test_clm_overfits_a_few_examples(tokenizer, sft_examples, tmp_path):
    few = sft_examples[:8]
    torch.manual_seed(0)
    model = SFTModel(tiny_config(tokenizer, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    config = SFTConfig(steps=200, batch_size=8, lr=1e-2, warmup_steps=10, eval_every=200)
    summary = quiet_train(model, tokenizer, few, few, config, tmp_path)
    assert summary["metrics"]["eval/loss"] < 0.05          # completion tokens memorised (~4.5 at start)
    assert summary["metrics"]["eval/token_accuracy"] == 1.0
    assert summary["metrics"]["eval/exact_match"] == 1.0   # greedy decoding reproduces all 8


def test_mlm_overfits_a_few_texts(tokenizer, builtin_data, tmp_path):
    texts = encode_records(builtin_data["text.train"][:8], "text", tokenizer, "mlm", 48)[0]
    torch.manual_seed(0)
    model = SFTModel(tiny_config(tokenizer, "bidirectional", hidden_dropout_prob=0.0,
                                 attention_probs_dropout_prob=0.0))
    config = SFTConfig(objective="mlm", steps=300, batch_size=8, lr=1e-2, warmup_steps=10, eval_every=300,
                       mlm_probability=0.3)
    summary = quiet_train(model, tokenizer, texts, texts, config, tmp_path)
    assert summary["metrics"]["eval/loss"] < 0.5  # masked tokens of seen texts (about 5.7 at start)
    assert "eval/perplexity" not in summary["metrics"]  # MLM loss is not a perplexity


@pytest.mark.parametrize("probability", [0.15, 0.4])
def test_mlm_probability_flag_sets_the_masked_share(probability, tokenizer, builtin_data, tmp_path, monkeypatch):
    """`--mlm-probability P` reaches the batches of the training loop: over >= 10k eligible
    (real, non-special) tokens, P +- 0.02 of them carry a label. Binomial: the share's standard
    deviation is sqrt(P (1 - P) / n) <= 0.005 at n = 10k, so 0.02 is 4 standard deviations."""
    from sftrl.cli import build_parser
    from sftrl.commands.sft import build_config
    from torch_impl import sft

    args = build_parser().parse_args(["pretrain", "--data", "x.jsonl", "--out", str(tmp_path / "run"),
                                      "--objective", "mlm", "--mlm-probability", str(probability)])
    config = build_config(args)
    assert config.mlm_probability == probability
    config = SFTConfig(**{**config.to_dict(), "steps": 12, "batch_size": 256, "eval_every": 1000})
    texts = encode_records(builtin_data["text.train"], "text", tokenizer, "mlm", 64)[0] * 4
    seen, to_model_batch = [], sft.to_model_batch

    def recording_to_model_batch(*a, **k):
        seen.append(to_model_batch(*a, **k))
        return seen[-1]
    monkeypatch.setattr(sft, "to_model_batch", recording_to_model_batch)
    model = SFTModel(tiny_config(tokenizer, "bidirectional", max_position_embeddings=64))
    quiet_train(model, tokenizer, texts, [], config, tmp_path / "run")
    assert len(seen) == config.steps
    special = torch.tensor(sorted(tokenizer.special_ids))
    chosen = eligible = 0
    for batch in seen:  # eligible: real, non-special tokens (the labels keep the ids of the chosen ones)
        labels = batch["labels"]
        original = torch.where(labels != -100, labels, batch["input_ids"])
        eligible += int(((batch["attention_mask"] == 1) & ~torch.isin(original, special)).sum())
        chosen += int((labels != -100).sum())
    assert eligible >= 10_000, eligible
    share = chosen / eligible
    assert abs(share - probability) <= 0.02, (share, eligible)


def test_lora_trains_adapters_only_and_merges_exactly(tokenizer, sft_examples, tmp_path):
    torch.manual_seed(0)
    model = SFTModel(tiny_config(tokenizer))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    messages = []
    config = SFTConfig(steps=20, batch_size=8, lr=1e-2, lora_rank=4, lora_alpha=8)
    summary = train(model, tokenizer, sft_examples[:32], [], config, tmp_path, quiet=True, log=messages.append)
    # adapters on every linear layer of both blocks: A (r x in), B (out x r) on query, key, value and the
    # attention output (32 -> 32), the feed-forward in (32 -> 64) and out (64 -> 32)
    assert summary["trainable_parameters"] == 2 * (4 * 4 * (32 + 32) + 2 * 4 * (32 + 64))
    assert f"trainable parameters: {summary['trainable_parameters']:,}" in messages[0]
    # peft wrapped the projections in place; the base weights under them did not move
    after = {k.replace(".base_layer", ""): v for k, v in model.state_dict().items() if "lora_" not in k}
    assert set(after) == set(before)
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), name
    exported = load_pretrained(tmp_path)
    assert set(exported.state_dict()) == set(SFTModel(tiny_config(tokenizer)).state_dict())
    changed = [n for n, t in exported.state_dict().items() if not torch.equal(t, before[n])]
    # every target moved (B starts at zero, so a target that moved got adapters), nothing else did
    targets = [f"bert.encoder.layer.{i}.{t}.weight" for i in range(2) for t in LORA_TARGETS_BY_ARCHITECTURE["bert"]]
    assert sorted(changed) == sorted(targets)
    # merging is exact: the exported plain model computes what base + adapters computed
    model.eval()
    ids = torch.tensor([sft_examples[0].input_ids])
    np.testing.assert_allclose(exported(ids).detach().numpy(), model(ids).detach().numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("lora", [{}, {"lora_rank": 4, "lora_embeddings": True}], ids=["full", "lora_embeddings"])
def test_interrupted_and_resumed_run_is_bitwise_identical(tokenizer, sft_examples, tmp_path, lora):
    """Full fine-tuning, and LoRA with the embeddings trained in full (adapters, embeddings and their
    optimizer state all in the checkpoint), resume bit for bit."""
    config = SFTConfig(steps=30, batch_size=8, lr=3e-3, warmup_steps=5, save_every=10, eval_every=10,
                       early_stopping_patience=5, seed=3, **lora)
    eval_examples = sft_examples[40:56]

    def fresh():
        torch.manual_seed(123)  # any init: the runs below reseed from config.seed
        return SFTModel(tiny_config(tokenizer))  # dropout 0.1: the RNG state must be restored

    quiet_train(fresh(), tokenizer, sft_examples[:40], eval_examples, config, tmp_path / "straight")
    interrupted = quiet_train(fresh(), tokenizer, sft_examples[:40], eval_examples, config,
                              tmp_path / "resumed", stop_after=17)
    assert interrupted == {"interrupted_at": 17}
    assert (tmp_path / "resumed" / "checkpoints" / "latest").read_text().strip() == "step-10"
    quiet_train(fresh(), tokenizer, sft_examples[:40], eval_examples, config, tmp_path / "resumed",
                resume=True)
    a = (tmp_path / "straight" / "model.safetensors").read_bytes()
    b = (tmp_path / "resumed" / "model.safetensors").read_bytes()
    assert a == b
    curve = lambda p: [json.loads(l)["train/loss"] for l in (p / "metrics.jsonl").read_text().splitlines()
                       if "train/loss" in l]
    assert curve(tmp_path / "straight") == curve(tmp_path / "resumed")
    assert len(curve(tmp_path / "resumed")) == 30
    kept = sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").glob("step-*"))
    assert kept == ["step-20", "step-30"]  # keep_checkpoints=2


def test_task_balanced_epoch_plan():
    tasks = ["copy"] * 90 + ["add"] * 10
    lengths = list(range(100))
    drawn = np.concatenate(plan_epoch(lengths, tasks, 8, seed=0, epoch=0))
    assert len(drawn) == 100
    counts = {t: sum(tasks[i] == t for i in drawn) for t in ("copy", "add")}
    assert 35 <= counts["add"] <= 65  # balanced, although add is 10% of the data
    weighted = np.concatenate(plan_epoch(lengths, tasks, 8, seed=0, epoch=0, task_weights={"copy": 1, "add": 0}))
    assert all(tasks[i] == "copy" for i in weighted)
    again = plan_epoch(lengths, tasks, 8, seed=0, epoch=0)
    assert np.array_equal(np.concatenate(again), drawn)
    assert not np.array_equal(np.concatenate(plan_epoch(lengths, tasks, 8, seed=0, epoch=1)), drawn)


def test_per_task_evaluation(tokenizer, sft_examples, tmp_path):
    torch.manual_seed(0)
    config = SFTConfig(steps=5, batch_size=8, eval_every=5)
    summary = quiet_train(SFTModel(tiny_config(tokenizer)), tokenizer, sft_examples[:16], sft_examples[16:40],
                          config, tmp_path)
    for task in ("copy", "reverse", "sort", "add"):
        for metric in ("loss", "token_accuracy", "perplexity", "exact_match", "partial_credit"):
            assert f"eval/{task}/{metric}" in summary["metrics"]
    m = summary["metrics"]
    assert m["eval/perplexity"] == pytest.approx(np.exp(m["eval/loss"]))


def test_the_best_weights_kept_in_memory_are_a_copy(tokenizer):
    """The export is the best held-out weights: the copy kept at that evaluation must not follow
    the later steps (on CPU a detached state dict shares the parameters' storage)."""
    from torch_impl.checkpoint import unique_state

    model = SFTModel(tiny_config(tokenizer))
    kept = unique_state(model)
    before = {k: v.clone() for k, v in kept.items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert all(torch.equal(kept[k], before[k]) for k in kept)


@pytest.mark.parametrize("objective,hf_class", [("clm", "BertLMHeadModel"), ("mlm", "BertForMaskedLM")])
def test_cli_init_from_huggingface_folder_and_export_loads_in_transformers(tmp_path, objective, hf_class):
    data = tmp_path / "data"
    assert run_cli("data", "--out", data).returncode == 0
    assert run_cli("tokenizer", "--data", data / "sft.train.jsonl", "--vocab-size", "300",
                   "--out", tmp_path / "tok.json").returncode == 0
    hf_config = transformers.BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, intermediate_size=64,
                                        max_position_embeddings=64, pad_token_id=0)
    transformers.BertForMaskedLM(hf_config).save_pretrained(tmp_path / "bert")
    result = run_cli("sft", "--data", data / "sft.train.jsonl", "--init", tmp_path / "bert", "--tokenizer",
                     tmp_path / "tok.json", "--objective", objective, "--steps", "5", "--out",
                     tmp_path / "run", "--quiet")
    assert result.returncode == 0, result.stderr
    for name in ("config.json", "model.safetensors", "tokenizer.json", "trainer_state.json", "metrics.jsonl"):
        assert (tmp_path / "run" / name).exists(), name
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))
    ours = load_pretrained(tmp_path / "run")
    hf = getattr(transformers, hf_class).from_pretrained(tmp_path / "run").eval()
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    np.testing.assert_allclose(hf(ids).logits.detach().numpy(), ours(ids).detach().numpy(), atol=1e-5, rtol=0)

    # a tokenizer of another size does not fit that model: one clear line
    assert run_cli("tokenizer", "--data", data / "sft.train.jsonl", "--vocab-size", "280",
                   "--out", tmp_path / "tok280.json").returncode == 0
    bad = run_cli("sft", "--data", data / "sft.train.jsonl", "--init", tmp_path / "bert", "--tokenizer",
                  tmp_path / "tok280.json", "--steps", "1", "--out", tmp_path / "bad", "--quiet")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"error: --init {tmp_path / 'bert'}: the model's vocabulary has 300 tokens but the tokenizer has "
        "280; use the tokenizer the model was trained with"]


@pytest.mark.parametrize("args,message", [
    (["--lr", "-1"], "error: --lr: must be in (0.0, inf], got -1.0"),
    (["--batch-size", "0"], "error: --batch-size: must be >= 1, got 0"),
    (["--tasks", "translate"], "error: --tasks: unknown task 'translate'; the data has: add, copy, reverse, sort"),
    (["--resume"], "error: --resume: no checkpoint in"),
    (["--steps", "3", "--epochs", "1"], "error: argument --epochs: not allowed with argument --steps"),
])
def test_cli_sft_errors(tmp_path, args, message):
    data = tmp_path / "data"
    run_cli("data", "--out", data)
    result = run_cli("sft", "--data", data / "sft.train.jsonl", "--out", tmp_path / "run", "--quiet", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr


def test_training_batches_come_from_a_dataloader_over_the_epoch_plan(tokenizer, sft_examples):
    """The SFT loop reads a `torch.utils.data.DataLoader` whose batch sampler is the epoch plan
    (`shared.data.plan_epoch`): from a given (epoch, batch), the very index batches of the plan,
    padded to their longest row, and iterating it leaves the global torch generator (dropout's)
    where it was."""
    from shared.data import collate
    from torch_impl.data import EpochPlanSampler, data_loader

    examples = sft_examples[:60]
    sampler = EpochPlanSampler(examples, 8, seed=3)
    sampler.set_epoch(1, start=2)
    loader = data_loader(examples, tokenizer, batch_sampler=sampler)
    assert isinstance(loader, torch.utils.data.DataLoader)
    plan = plan_epoch([len(e.input_ids) for e in examples], [e.task for e in examples], 8, seed=3, epoch=1)
    dropout_stream = torch.get_rng_state()
    batches = list(loader)
    assert torch.equal(torch.get_rng_state(), dropout_stream)
    assert len(batches) == len(sampler) == len(plan) - 2
    for padded, indices in zip(batches, plan[2:]):
        chosen = [examples[i] for i in indices]
        expected = collate([e.input_ids for e in chosen], tokenizer.pad_id, labels=[e.labels for e in chosen])
        assert padded.keys() == expected.keys()
        for key in expected:
            np.testing.assert_array_equal(padded[key], expected[key])


@pytest.mark.slow  # torch.compile's first compile takes about a minute on 2 cores
def test_compiled_training_follows_the_eager_run(tokenizer, sft_examples, tmp_path):
    """--compile changes how the forward runs, not what it computes: 4 steps from the same weights
    give the eager run's losses. Bound: the compiled kernels sum in another order, each float32
    op rounding at 2^-24 relative; over the model's few hundred chained ops and 4 steps that stays
    far below 1e-4 relative."""
    config = SFTConfig(steps=4, batch_size=8, lr=1e-3, warmup_steps=0, eval_every=4)
    losses = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = SFTModel(tiny_config(tokenizer, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
        quiet_train(model, tokenizer, sft_examples[:32], sft_examples[:8], config, tmp_path / str(compiled),
                    compile_model=compiled)
        lines = (tmp_path / str(compiled) / "metrics.jsonl").read_text().splitlines()
        losses[compiled] = [json.loads(line)["train/loss"] for line in lines if "train/loss" in line]
    assert len(losses[True]) == 4
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)
