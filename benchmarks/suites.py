"""The benchmark suites. Each returns rows: {suite, case, side, median_ms, iqr_ms, value, unit}
plus comparison rows {suite, comparison, ratio, target, met} computed from them.

Sizes: "default" for the published figures, "tiny" for the smoke test (structure, not speed).
"""

from __future__ import annotations

import time

import numpy as np

import tf_impl  # noqa: F401  (TensorFlow, quietly)
import keras
import tensorflow as tf
import torch
import torch.nn.functional as F

from benchmarks.steps import keras_train_step, mlm_batch, model_config, torch_train_step
from benchmarks.timing import comparison, interleaved, row
from shared.algorithms import ALGORITHMS
from shared.config import ModelConfig
from shared.data import build_attention_mask, collate, plan_epoch
from shared.tasks import make_builtin_data
from shared.tokenizer import Tokenizer

CRITIC_FREE = [a.name for a in ALGORITHMS.values() if not a.critic]  # timed against PPO

SIZES = {
    "default": dict(batch=16, seq=64, hidden=128, layers=2, heads=4, vocab=512, repeat=7, warmup=2, train_repeat=25,
                    gen_batches=(1, 16), gen_tokens=(32, 128), gen_repeat=3, matmul=1024, compile=True,
                    ppo_batch=64, ppo_new_tokens=16,
                    # the SFT steps again at a realistic vocabulary, where the LM head is a large share
                    large=dict(vocab=8000, hidden=256, layers=4, heads=4, seq=128, batch=16, train_repeat=9),
                    # the scaling sweeps: (C, L) models, then at the mid model T and batch (benchmarks/scaling.py)
                    scaling=dict(vocab=8000, batch=8, seq=128, models=((64, 2), (128, 4), (256, 6), (512, 8)),
                                 mid=(256, 6), seqs=(64, 128, 256, 512), batches=(1, 4, 16), repeat=5, warmup=1),
                    # our decoders against transformers' and keras-hub's (benchmarks/decoders.py)
                    decoders=dict(vocab=8000, hidden=256, layers=4, heads=4, kv_heads=2, positions=256, batch=8,
                                  seq=128, train_repeat=7, gen_batch=16, prompt=16, new_tokens=64, gen_repeat=3,
                                  warmup=1)),
    # compile=False: torch.compile's first compile (about a minute on 2 cores) is left out of the smoke test
    "tiny": dict(batch=2, seq=8, hidden=16, layers=1, heads=2, vocab=300, repeat=2, warmup=1, train_repeat=2,
                 gen_batches=(1, 2), gen_tokens=(4,), gen_repeat=1, matmul=64, compile=False,
                 ppo_batch=4, ppo_new_tokens=4,
                 large=dict(vocab=400, hidden=16, layers=1, heads=2, seq=8, batch=2, train_repeat=2),
                 scaling=dict(vocab=300, batch=2, seq=8, models=((16, 1), (32, 2)), mid=(16, 1), seqs=(8, 16),
                              batches=(1, 2), repeat=2, warmup=1),
                 decoders=dict(vocab=300, hidden=16, layers=1, heads=2, kv_heads=1, positions=32, batch=2, seq=8,
                               train_repeat=2, gen_batch=2, prompt=4, new_tokens=4, gen_repeat=2, warmup=1)),
}


def matmul_peak_gflops(s, device):
    """The machine's own dense float32 matmul rate (torch, n x n @ n x n), GFLOP/s."""
    n = s["matmul"]
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else None
    t = interleaved({"matmul": lambda: a @ b}, repeat=max(5, s["repeat"]), warmup=2, sync=sync)["matmul"]
    return 2 * n ** 3 / t["min_s"] / 1e9


# ----------------------------------------------------------------------------- ops

def suite_ops(s, device):
    rng = np.random.default_rng(0)
    B, T, H, C = s["batch"], s["seq"], s["heads"], s["hidden"]
    hs = C // H
    q, k, v = (rng.normal(size=(B, H, T, hs)).astype(np.float32) for _ in range(3))
    lengths = rng.integers(T // 2, T + 1, size=B)
    mask = build_attention_mask(np.array([[1] * n + [0] * (T - n) for n in lengths]), causal=True)
    x = rng.normal(size=(B, T, C)).astype(np.float32)
    gamma, beta = np.ones(C, np.float32), np.zeros(C, np.float32)
    logits = rng.normal(size=(B * T, s["vocab"])).astype(np.float32)
    labels = rng.integers(0, s["vocab"], size=B * T)
    logp, old, adv = (rng.normal(size=(B, T)).astype(np.float32) * 0.1 for _ in range(3))

    from tf_impl import losses as tf_losses
    from tf_impl import model as tf_model
    from torch_impl import losses as torch_losses
    from torch_impl import model as torch_model

    tt = lambda a: torch.as_tensor(a, device=device)
    layer_norm = keras.layers.LayerNormalization(epsilon=1e-12)
    layer_norm.build(x.shape)
    tq, tk, tv, tm = tt(q), tt(k), tt(v), tt(mask)
    fq, fk, fv, fm = (tf.constant(a) for a in (q, k, v, mask))
    ops = {
        "attention forward": (
            lambda: torch_model.scaled_dot_product_attention(tq, tk, tv, tm),
            lambda: tf_model.scaled_dot_product_attention(fq, fk, fv, fm)),
        "layer_norm": (lambda: F.layer_norm(tt(x), (C,), tt(gamma), tt(beta), 1e-12),
                       lambda: layer_norm(tf.constant(x))),
        "gelu": (lambda: torch_model.gelu(tt(x)), lambda: tf_model.gelu(tf.constant(x))),
        "softmax cross-entropy": (
            lambda: torch_losses.cross_entropy(tt(logits), tt(labels)),
            lambda: tf_losses.cross_entropy(tf.constant(logits), tf.constant(labels))),
        "ppo clipped loss": (
            lambda: torch_losses.ppo_clip_loss(tt(logp), tt(old), tt(adv), 0.2),
            lambda: tf_losses.ppo_clip_loss(tf.constant(logp), tf.constant(old), tf.constant(adv), 0.2)),
    }

    def attention_backward_torch():
        qq = tq.clone().requires_grad_(True)
        out, _ = torch_model.scaled_dot_product_attention(qq, tk, tv, tm)
        out.sum().backward()

    def attention_backward_tf():
        with tf.GradientTape() as tape:
            qq = tf.identity(fq)
            tape.watch(qq)
            out, _ = tf_model.scaled_dot_product_attention(qq, fk, fv, fm)
            total = tf.reduce_sum(out)
        return tape.gradient(total, qq)

    ops["attention forward+backward"] = (attention_backward_torch, attention_backward_tf)
    return time_ops(ops, s, device)


def time_ops(ops, s, device):
    """Each op in PyTorch, TF eager, tf.function and tf.function + XLA, interleaved. -> (rows, comparisons)"""
    rows, comparisons = [], []
    for name, (torch_fn, tf_fn) in ops.items():
        plain = tf.autograph.experimental.do_not_convert(tf_fn)  # straight-line TF ops: no AutoGraph needed
        functions = {"pytorch": torch_fn, "tf eager": tf_fn, "tf.function": tf.function(plain),
                     "tf.function+xla": tf.function(plain, jit_compile=True)}
        timings = interleaved(functions, s["repeat"], s["warmup"],
                              sync=torch.cuda.synchronize if device == "cuda" else None)
        rows += [row("ops", name, side, t) for side, t in timings.items()]
        comparisons.append(comparison("ops", f"{name}: tf.function / pytorch time",
                                      1e3 * timings["tf.function"]["median_s"], 1e3 * timings["pytorch"]["median_s"]))
    return rows, comparisons


# ----------------------------------------------------------------------------- train

def train_flops(config, tokens, seq):
    """Training FLOPs: 6 N per token for the matmuls of N parameters (forward 2N, backward 4N),
    plus attention scores and mixing, 12 L T C per token (Kaplan et al.; Chowdhery et al.)."""
    from torch_impl.model import SFTModel

    n_params = sum(p.numel() for p in SFTModel(config).parameters())
    return 6 * n_params * tokens + 12 * config.num_hidden_layers * seq * config.hidden_size * tokens


def keras_mha_model(config, seq):
    """The same shape of model built the Keras way: keras.layers.MultiHeadAttention blocks."""
    ids = keras.Input((seq,), dtype="int32")
    x = keras.layers.Embedding(config.vocab_size, config.hidden_size)(ids)
    positions = keras.ops.arange(seq)
    x = x + keras.layers.Embedding(config.max_position_embeddings, config.hidden_size)(positions)
    x = keras.layers.LayerNormalization(epsilon=1e-12)(x)
    for _ in range(config.num_hidden_layers):
        attention = keras.layers.MultiHeadAttention(config.num_attention_heads, config.head_size)(x, x)
        x = keras.layers.LayerNormalization(epsilon=1e-12)(x + attention)
        ff = keras.layers.Dense(config.hidden_size)(keras.layers.Dense(config.intermediate_size, activation="gelu")(x))
        x = keras.layers.LayerNormalization(epsilon=1e-12)(x + ff)
    x = keras.layers.LayerNormalization(epsilon=1e-12)(keras.layers.Dense(config.hidden_size, activation="gelu")(x))
    return keras.Model(ids, keras.layers.Dense(config.vocab_size)(x))


def mlm_steps(s, device, config, batch):
    """The MLM train steps timed side by side: ours (sparse head, dense head, torch.compile where
    the size asks for it), transformers' BertForMaskedLM, and in Keras our PolicyModel and a
    keras.layers.MultiHeadAttention model, each as tf.function and with XLA."""
    import transformers

    from tf_impl import losses as tf_losses
    from tf_impl.model import PolicyModel
    from torch_impl.model import SFTModel

    ids, mask, labels = batch
    tt = lambda a: torch.as_tensor(a, device=device)
    ours = SFTModel(config).to(device).train()
    hf = transformers.BertForMaskedLM(transformers.BertConfig.from_dict(config.to_dict())).to(device).train()
    steps = {"SFTModel (pytorch)": torch_train_step(ours, lambda: ours(tt(ids), tt(mask), tt(labels))),
             "SFTModel, dense head (pytorch)": torch_train_step(  # every position's logits, as HF
                 ours, lambda: ours(tt(ids), tt(mask), tt(labels), sparse=False)),
             "BertForMaskedLM (pytorch)": torch_train_step(
                 hf, lambda: hf(input_ids=tt(ids), attention_mask=tt(mask), labels=tt(labels)).loss)}
    if s["compile"]:
        compiled = torch.compile(ours)
        steps["SFTModel, torch.compile (pytorch)"] = torch_train_step(
            ours, lambda: compiled(tt(ids), tt(mask), tt(labels)))
    f_ids, f_mask, f_labels = tf.constant(ids, tf.int32), tf.constant(mask, tf.int32), tf.constant(labels)
    keras_ours, keras_mha = PolicyModel(config), keras_mha_model(config, s["seq"])
    for jit_compile, kind in ((False, "tf.function"), (True, "tf.function+XLA")):
        ours_step = keras_train_step(keras_ours, tf_losses.cross_entropy, jit_compile)
        mha_step = keras_train_step(keras_mha, tf_losses.cross_entropy, jit_compile)
        steps[f"PolicyModel (keras, {kind})"] = lambda step=ours_step: step(f_ids, f_mask, f_labels)
        steps[f"MultiHeadAttention model (keras, {kind})"] = lambda step=mha_step: step(f_ids, None, f_labels)
    return steps


def suite_train(s, device, peak_gflops):
    rng = np.random.default_rng(0)
    config = model_config(s)
    steps = mlm_steps(s, device, config, mlm_batch(s, rng))
    compile_started = time.perf_counter()
    for step in steps.values():  # first calls: traces, XLA and torch.compile compiles, outside the timing
        step()
    warmup_s = time.perf_counter() - compile_started
    timings = interleaved(steps, s["train_repeat"], s["warmup"],
                          sync=torch.cuda.synchronize if device == "cuda" else None)
    flops = train_flops(config, s["batch"] * s["seq"], s["seq"])
    rows = [row("train", "MLM train step (fwd+bwd+AdamW)", side, t, round(flops / t["median_s"] / 1e9 / peak_gflops, 4),
                "MFU (fraction of measured matmul peak)") for side, t in timings.items()]
    ms = {k: 1e3 * v["median_s"] for k, v in timings.items()}
    comparisons = [
        comparison("train", "BertForMaskedLM / SFTModel step time", ms["BertForMaskedLM (pytorch)"],
                   ms["SFTModel (pytorch)"], target=1.5),
        comparison("train", "SFTModel dense head / sparse head step time", ms["SFTModel, dense head (pytorch)"],
                   ms["SFTModel (pytorch)"], note="the LM head on the 15 % masked positions only"),
        comparison("train", "Keras MultiHeadAttention model / PolicyModel step time (XLA both)",
                   ms["MultiHeadAttention model (keras, tf.function+XLA)"], ms["PolicyModel (keras, tf.function+XLA)"],
                   target=1.0),
        comparison("train", "PolicyModel tf.function / XLA step time", ms["PolicyModel (keras, tf.function)"],
                   ms["PolicyModel (keras, tf.function+XLA)"]),
        comparison("train", "SFTModel (PyTorch) / PolicyModel (Keras, XLA) step time", ms["SFTModel (pytorch)"],
                   ms["PolicyModel (keras, tf.function+XLA)"], target=1.0),
    ]
    if "SFTModel, torch.compile (pytorch)" in ms:
        comparisons.append(comparison(
            "train", "SFTModel eager / torch.compile step time", ms["SFTModel (pytorch)"],
            ms["SFTModel, torch.compile (pytorch)"],
            note=f"> 1: --compile pays; first calls of all steps (traces and compiles) took {warmup_s:.0f} s"))
    padded_rows, padded_cmp = padding_benchmark(s, device)
    causal_rows, causal_cmp = completion_only_benchmark(s, device, peak_gflops)
    large_rows, large_cmp = large_vocabulary_benchmark(s, device, peak_gflops)
    return rows + causal_rows + large_rows + padded_rows, comparisons + causal_cmp + large_cmp + padded_cmp


def completion_only_benchmark(s, device, peak_gflops, at=""):
    """The completion-only (causal) step: our SFTModel, sparse and dense head, against
    `transformers.BertLMHeadModel` on the same weights, batch and labels (the last 45 % of each row,
    the completion share of the built-in SFT data's sequences). `at` names a non-default size."""
    import transformers

    from torch_impl.checkpoint import state_dict_for_saving
    from torch_impl.model import SFTModel

    rng = np.random.default_rng(1)
    config = model_config(s, "causal")
    ids = rng.integers(5, s["vocab"], size=(s["batch"], s["seq"]))
    labels = ids.copy()
    labels[:, :int(round(0.55 * s["seq"]))] = -100
    tt = lambda a: torch.as_tensor(a, device=device)
    ours = SFTModel(config).to(device).train()
    hf = transformers.BertLMHeadModel(transformers.BertConfig.from_dict(config.to_dict())).to(device).train()
    hf.load_state_dict(state_dict_for_saving(ours), strict=False)

    timings = interleaved({
        "SFTModel (pytorch)": torch_train_step(ours, lambda: ours(tt(ids), labels=tt(labels))),
        "SFTModel, dense head (pytorch)": torch_train_step(ours, lambda: ours(tt(ids), labels=tt(labels), sparse=False)),
        "BertLMHeadModel (pytorch)": torch_train_step(hf, lambda: hf(input_ids=tt(ids), labels=tt(labels)).loss),
    }, s["train_repeat"], s["warmup"], sync=torch.cuda.synchronize if device == "cuda" else None)
    flops = train_flops(config, s["batch"] * s["seq"], s["seq"])
    rows = [row("train", f"completion-only train step (fwd+bwd+AdamW){at}", side, t,
                round(flops / t["median_s"] / 1e9 / peak_gflops, 4), "MFU (fraction of measured matmul peak)")
            for side, t in timings.items()]
    ms = {k: 1e3 * v["median_s"] for k, v in timings.items()}
    return rows, [
        comparison("train", f"BertLMHeadModel / SFTModel completion-only step time{at}",
                   ms["BertLMHeadModel (pytorch)"], ms["SFTModel (pytorch)"], target=1.3),
        comparison("train", f"SFTModel dense head / sparse head completion-only step time{at}",
                   ms["SFTModel, dense head (pytorch)"], ms["SFTModel (pytorch)"])]


def large_vocabulary_benchmark(s, device, peak_gflops):
    """The MLM and the completion-only step against transformers at a realistic vocabulary and width
    (SIZES[...]["large"]: 8000 tokens, C 256, L 4, T 128 by default), where the LM head -- the
    part sparse prediction shrinks -- is a large share of the step."""
    import transformers

    from torch_impl.model import SFTModel

    big = {**s, **s["large"]}
    at = f" at V {big['vocab']}, C {big['hidden']}, L {big['layers']}, T {big['seq']}"
    config = model_config(big)
    ids, mask, labels = mlm_batch(big, np.random.default_rng(2))
    tt = lambda a: torch.as_tensor(a, device=device)
    ours = SFTModel(config).to(device).train()
    hf = transformers.BertForMaskedLM(transformers.BertConfig.from_dict(config.to_dict())).to(device).train()
    timings = interleaved({
        "SFTModel (pytorch)": torch_train_step(ours, lambda: ours(tt(ids), tt(mask), tt(labels))),
        "BertForMaskedLM (pytorch)": torch_train_step(
            hf, lambda: hf(input_ids=tt(ids), attention_mask=tt(mask), labels=tt(labels)).loss),
    }, big["train_repeat"], s["warmup"], sync=torch.cuda.synchronize if device == "cuda" else None)
    flops = train_flops(config, big["batch"] * big["seq"], big["seq"])
    rows = [row("train", f"MLM train step (fwd+bwd+AdamW){at}", side, t,
                round(flops / t["median_s"] / 1e9 / peak_gflops, 4), "MFU (fraction of measured matmul peak)")
            for side, t in timings.items()]
    mlm = comparison("train", f"BertForMaskedLM / SFTModel step time{at}",
                     1e3 * timings["BertForMaskedLM (pytorch)"]["median_s"],
                     1e3 * timings["SFTModel (pytorch)"]["median_s"], target=1.5)
    causal_rows, causal_cmp = completion_only_benchmark(big, device, peak_gflops, at)
    return rows + causal_rows, [mlm] + causal_cmp


def padding_benchmark(s, device):
    """Real (non-pad) tokens per second: every batch padded to the longest allowed length vs
    dynamic padding with length bucketing, on the built-in SFT data."""
    from torch_impl.model import SFTModel
    from torch_impl.data import encode_records

    data = make_builtin_data(0, {"sft.train": 400 if s is SIZES["default"] else 16})["sft.train"]
    tokenizer = Tokenizer.train([r["prompt"] + " " + r["completion"] for r in data], vocab_size=s["vocab"])
    examples = encode_records(data, "sft", tokenizer, "clm", 64)[0]
    config = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                         num_attention_heads=s["heads"], intermediate_size=4 * s["hidden"],
                         max_position_embeddings=64, attention_type="causal")
    model = SFTModel(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    lengths = [len(e.input_ids) for e in examples]
    rng = np.random.default_rng(0)
    padded_plan = np.array_split(rng.permutation(len(examples)), max(1, len(examples) // s["batch"]))
    bucketed_plan = plan_epoch(lengths, [None] * len(lengths), s["batch"], seed=0, epoch=0)

    def run(plan, fixed_length):
        def epoch():
            for indices in plan:
                chosen = [examples[i] for i in indices]
                batch = collate([e.input_ids for e in chosen], tokenizer.pad_id, labels=[e.labels for e in chosen],
                                length=fixed_length)
                optimizer.zero_grad(set_to_none=True)
                model(*(torch.as_tensor(batch[k], device=device) for k in ("input_ids", "attention_mask", "labels"))).backward()
                optimizer.step()
        return epoch

    timings = interleaved({"padded to max length": run(padded_plan, 64),
                           "dynamic padding + length buckets": run(bucketed_plan, None)},
                          repeat=max(1, s["repeat"] // 3), warmup=1)
    real_tokens = sum(lengths)
    rows = [row("train", "SFT epoch, real tokens/s", side, t, round(real_tokens / t["median_s"]), "real tokens/s")
            for side, t in timings.items()]
    ms = {k: 1e3 * v["median_s"] for k, v in timings.items()}
    return rows, [comparison("train", "dynamic+buckets / padded real tokens per s", ms["padded to max length"],
                             ms["dynamic padding + length buckets"], target=1.5)]


# ----------------------------------------------------------------------------- generate

def suite_generate(s, device):
    from tf_impl import generate as tf_generate
    from tf_impl.convert import assign_numpy_state_dict
    from tf_impl.model import PolicyModel
    from torch_impl import generate as torch_generate
    from torch_impl.checkpoint import state_dict_for_saving
    from torch_impl.model import SFTModel

    config = model_config(s, "causal", positions=max(s["gen_tokens"]) + 32)
    torch.manual_seed(0)
    model = SFTModel(config).to(device).eval()
    keras_model = PolicyModel(config)
    assign_numpy_state_dict(keras_model, {k: v.numpy() for k, v in state_dict_for_saving(model).items()})
    rng = np.random.default_rng(0)
    rows, comparisons = [], []
    for batch in s["gen_batches"]:
        b = collate([list(rng.integers(5, config.vocab_size, size=n)) for n in rng.integers(8, 17, size=batch)],
                    0, side="left")
        t_ids = torch.as_tensor(b["input_ids"], device=device)
        t_mask = torch.as_tensor(b["attention_mask"], device=device)
        for new in s["gen_tokens"]:
            timings = interleaved({
                "pytorch, KV cache": lambda: torch_generate.generate(model, t_ids, t_mask, new),
                "pytorch, recompute": lambda: torch_generate.generate(model, t_ids, t_mask, new, use_cache=False),
                "tensorflow, KV cache": lambda: tf_generate.generate(keras_model, b["input_ids"], b["attention_mask"], new),
                "tensorflow, KV cache, XLA": lambda: tf_generate.generate(keras_model, b["input_ids"],
                                                                          b["attention_mask"], new, jit_compile=True),
                "tensorflow, recompute": lambda: tf_generate.generate(keras_model, b["input_ids"], b["attention_mask"],
                                                                      new, use_cache=False),
            }, s["gen_repeat"], 1)
            case = f"batch {batch}, {new} new tokens"
            for side, t in timings.items():
                rows.append(row("generate", case, side, t, round(batch * new / t["median_s"]), "tokens/s"))
            ms = {k: 1e3 * v["median_s"] for k, v in timings.items()}
            target = 5.0 if (batch == 16 and new == 128) else None
            for framework in ("pytorch", "tensorflow"):
                comparisons.append(comparison("generate", f"{framework} {case}: recompute / KV-cache time",
                                              ms[f"{framework}, recompute"], ms[f"{framework}, KV cache"], target))
            comparisons.append(comparison("generate", f"{case}: tensorflow XLA / pytorch tokens per s (KV cache)",
                                          ms["pytorch, KV cache"], ms["tensorflow, KV cache, XLA"],
                                          1.0 if (batch == 16 and new == 128) else None))
    return rows, comparisons


# ----------------------------------------------------------------------------- ppo

def suite_ppo(s, device):
    """One RL iteration by phase, at the default preset's batch: PPO as it runs (sparse heads and
    XLA) and as before both (heads on every position, plain tf.function), and GRPO, RLOO and
    REINFORCE as they run (`sftrl rl --algorithm`; the same batch of completions: grpo and rloo
    sample 4 of each of batch / 4 prompts). The trainers alternate iterations, so drift in the
    machine's speed hits all alike."""
    from benchmarks.ppo_setup import ppo_trainer

    fast = dict(xla=True, sparse_head=True)
    variants = {"ppo, sparse heads + XLA": dict(fast), "ppo, dense heads, no XLA": dict(xla=False, sparse_head=False),
                **{f"{algorithm}, sparse heads + XLA": dict(fast, algorithm=algorithm)
                   for algorithm in CRITIC_FREE}}
    trainers = {name: ppo_trainer(s, **v) for name, v in variants.items()}
    phases = {name: {"rollout": [], "reward": [], "update": []} for name in variants}
    for iteration in range(1, 3 + s["repeat"]):
        for name, (trainer, records) in trainers.items():
            metrics, _ = trainer.iteration(records(iteration), iteration)
            if iteration > 2:  # the first iterations trace (and compile) the steps
                for phase in phases[name]:
                    phases[name][phase].append(metrics[f"time/{phase}"])
    rows, totals, batch = [], {}, s["ppo_batch"]
    for name, by_phase in phases.items():
        totals[name] = sum(np.median(v) for v in by_phase.values())
        case = f"one RL iteration (batch {batch}), {name}"
        for phase, times in by_phase.items():
            t = {"median_s": float(np.median(times)), "iqr_s": float(np.subtract(*np.percentile(times, [75, 25])))}
            rows.append(row("ppo", case, phase, t, round(float(np.median(times)) / totals[name], 3),
                            "share of the iteration"))
        whole = [sum(parts) for parts in zip(*by_phase.values())]
        t = {"median_s": float(np.median(whole)), "iqr_s": float(np.subtract(*np.percentile(whole, [75, 25])))}
        rows.append(row("ppo", case, "iteration", t, round(batch / t["median_s"], 1), "samples per s"))
    comparisons = [comparison("ppo", "PPO iteration: dense heads, no XLA / sparse heads + XLA time",
                              totals["ppo, dense heads, no XLA"], totals["ppo, sparse heads + XLA"], target=1.6,
                              note="medians of rollout + reward + update")]
    for algorithm in CRITIC_FREE:
        comparisons.append(comparison("ppo", f"PPO / {algorithm.upper()} iteration time (both sparse + XLA)",
                                      totals["ppo, sparse heads + XLA"], totals[f"{algorithm}, sparse heads + XLA"],
                                      note="the same completions per iteration; rloo and reinforce take one step"))
    return rows, comparisons


# ----------------------------------------------------------------------------- memory

def suite_memory(s, device):
    """Peak RSS of an SFT, a reward-model and a PPO run at the benchmark sizes, each in a process of
    its own that imports only its framework (`benchmarks/memory.py`)."""
    import json
    import subprocess
    import sys

    rows = []
    for stage in ("sft", "reward_model", "ppo"):
        done = subprocess.run([sys.executable, "-m", "benchmarks.memory", stage, json.dumps(s)],
                              capture_output=True, text=True, check=True)
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        timing = {"median_s": measured["seconds"], "iqr_s": 0.0}
        rows.append(row("memory", f"{stage} run", "after the imports", timing, measured["imports_mib"], "MiB peak RSS"))
        rows.append(row("memory", f"{stage} run", "peak", timing, measured["peak_mib"], "MiB peak RSS"))
    return rows, []


def suite_peers(s, device):
    from benchmarks.peers import suite_peers as peers

    return peers(s, device)


def suite_decoders(s, device):
    from benchmarks.decoders import suite_decoders as decoders

    return decoders(s, device)


def suite_scaling(s, device):
    from benchmarks.scaling import suite_scaling as scaling

    return scaling(s, device)


def suite_profile(s, device):
    from benchmarks.profile import suite_profile as profile

    return profile(s, device)


SUITES = {"ops": suite_ops, "train": suite_train, "generate": suite_generate, "ppo": suite_ppo,
          "memory": suite_memory, "peers": suite_peers, "scaling": suite_scaling,
          "decoders": suite_decoders, "profile": suite_profile}
