"""Our decoders against their library peers, on the same weights: a GPT-2 and a Llama-style model
(grouped-query attention, untied head) of one small size (SIZES[...]["decoders"]), each written as a
`transformers` folder offline (random weights, no tokenizer: nothing here tokenizes text).

Per model, two jobs:
  - the causal-LM train step (forward + backward + AdamW on the next-token loss of every
    position): our PyTorch model as the SFT trainer runs it (eager, the LM head on the labelled
    positions) against `transformers`' GPT2LMHeadModel / LlamaForCausalLM (eager), and our Keras
    model (tf.function + XLA) against keras-hub's GPT2CausalLM / Llama3CausalLM built from the
    same folder (tf.function + XLA too);
  - greedy generation with a KV cache from unpadded prompts: our torch `generate` against
    `transformers`' `generate(use_cache=True)`, our Keras `generate(jit_compile=True)` against
    keras-hub's `CausalLM.generate` compiled as keras-hub compiles it by default (XLA), greedy;
    at the default size also our torch `generate(jit_compile=True)` (the cached forward compiled
    by torch.compile), against our eager one.
keras-hub is optional (the `peers` extra): without it the Keras peer rows are left out and one
comparison row per model says why. Dropout is 0 in every config, so no side does extra work.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from pathlib import Path

import numpy as np

KERAS_HUB_MISSING = "keras-hub is not installed; pip install \".[peers]\" adds it"


def hf_config(kind, d):
    """The transformers config of a `kind` ("gpt2" or "llama") model of size d, without dropout and
    without an end-of-sequence id, so generation always runs its full length."""
    import transformers

    common = dict(vocab_size=d["vocab"], bos_token_id=None, eos_token_id=None, pad_token_id=None)
    if kind == "gpt2":
        return transformers.GPT2Config(n_positions=d["positions"], n_embd=d["hidden"], n_layer=d["layers"],
                                       n_head=d["heads"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common)
    return transformers.LlamaConfig(hidden_size=d["hidden"], intermediate_size=4 * d["hidden"],
                                    num_hidden_layers=d["layers"], num_attention_heads=d["heads"],
                                    num_key_value_heads=d["kv_heads"], max_position_embeddings=d["positions"],
                                    tie_word_embeddings=False, attention_dropout=0.0, **common)


def make_folder(kind, d, directory) -> Path:
    """A `transformers` folder of a random `kind` model of size d, as save_pretrained writes it."""
    import torch
    import transformers

    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(hf_config(kind, d)).save_pretrained(directory)
    return Path(directory)


def torch_sides(folder, d, device, compile_decode=False):
    """{side: (train step, generate)} for our PyTorch model and transformers', loaded from `folder`;
    compile_decode adds our generate with the cached forward compiled (no train step: None)."""
    import torch
    import transformers

    from benchmarks.steps import torch_train_step
    from torch_impl import generate as torch_generate
    from torch_impl.checkpoint import load_pretrained

    rng = np.random.default_rng(0)
    ids = torch.as_tensor(rng.integers(0, d["vocab"], size=(d["batch"], d["seq"])), device=device)
    prompts = torch.as_tensor(rng.integers(0, d["vocab"], size=(d["gen_batch"], d["prompt"])), device=device)
    prompt_mask = torch.ones_like(prompts)
    ours = load_pretrained(folder).to(device).train()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").to(device).train()

    def generate_with(model, run):
        def generate():
            model.eval()
            with torch.no_grad():
                new = run()
            model.train()
            assert new.shape == (d["gen_batch"], d["new_tokens"])  # every row ran its full length
        return generate

    sides = {
        "ours (pytorch)": (torch_train_step(ours, lambda: ours(ids, labels=ids)), generate_with(
            ours, lambda: torch_generate.generate(ours, prompts, prompt_mask, d["new_tokens"]))),
        "transformers (pytorch)": (torch_train_step(theirs, lambda: theirs(input_ids=ids, labels=ids).loss),
                                   generate_with(theirs, lambda: theirs.generate(
                                       prompts, attention_mask=prompt_mask, max_new_tokens=d["new_tokens"],
                                       do_sample=False, use_cache=True, pad_token_id=0)[:, d["prompt"]:])),
    }
    if compile_decode:  # the cached forward compiled by torch.compile: a generate side only
        sides["ours (pytorch, torch.compile)"] = (None, generate_with(ours, lambda: torch_generate.generate(
            ours, prompts, prompt_mask, d["new_tokens"], jit_compile=True)))
    return sides


def keras_causal_lm_step(variables, logits_of, jit_compile=True):
    """One AdamW step of the mean next-token loss of every position, `logits_of(ids)` (B, T, V)."""
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.AdamW(learning_rate=1e-4)
    optimizer.build(variables)

    @tf.function(jit_compile=jit_compile)
    def step(ids):
        with tf.GradientTape() as tape:
            logits = logits_of(ids)[:, :-1]
            loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(ids[:, 1:], logits, from_logits=True))
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]
        optimizer.apply_gradients(zip(grads, variables))
        return loss
    return step


def keras_sides(folder, d):
    """{side: (train step, generate)} for our Keras model and, where installed, keras-hub's."""
    import tensorflow as tf

    from tf_impl import generate as tf_generate
    from tf_impl.convert import load_pretrained

    rng = np.random.default_rng(0)
    ids = tf.constant(rng.integers(0, d["vocab"], size=(d["batch"], d["seq"])), tf.int32)
    prompts = rng.integers(0, d["vocab"], size=(d["gen_batch"], d["prompt"])).astype("int32")
    prompt_mask = np.ones_like(prompts)
    ours = load_pretrained(folder)
    ours_step = keras_causal_lm_step(ours.trainable_variables, lambda x: ours(x, training=True))

    def ours_generate():
        new = tf_generate.generate(ours, prompts, prompt_mask, d["new_tokens"], jit_compile=True)
        assert tuple(new.shape) == (d["gen_batch"], d["new_tokens"])

    sides = {"ours (keras, XLA)": (lambda: ours_step(ids), ours_generate)}
    if importlib.util.find_spec("keras_hub") is None:
        return sides
    import keras_hub

    theirs = keras_hub.models.CausalLM.from_preset(str(folder), preprocessor=None)
    theirs.compile(sampler="greedy")  # keras-hub's default compile (jit_compile="auto": XLA), greedy sampling
    full = tf.ones_like(ids)
    theirs_step = keras_causal_lm_step(theirs.trainable_variables, lambda x: theirs(
        {"token_ids": x, "padding_mask": full}, training=True))
    # keras-hub generates into the masked-off columns of a (B, prompt + new) batch
    pad = np.zeros((d["gen_batch"], d["new_tokens"]), "int32")
    inputs = {"token_ids": np.concatenate([prompts, pad], 1), "padding_mask": np.concatenate([prompt_mask, pad], 1)}

    def theirs_generate():
        out = theirs.generate(inputs, stop_token_ids=None)
        assert out["token_ids"].shape == (d["gen_batch"], d["prompt"] + d["new_tokens"])
    sides[f"keras-hub {type(theirs).__name__} (keras, XLA)"] = (lambda: theirs_step(ids), theirs_generate)
    return sides


def suite_decoders(s, device):
    import torch

    from benchmarks.timing import comparison, interleaved, row

    d = s["decoders"]
    sync = torch.cuda.synchronize if device == "cuda" else None
    rows, comparisons = [], []
    for kind, name, heads in (("gpt2", "GPT-2", f"H {d['heads']}"),
                              ("llama", "Llama", f"H {d['heads']}, KV heads {d['kv_heads']}")):
        at = f"{name}, C {d['hidden']}, L {d['layers']}, {heads}, V {d['vocab']}"
        with tempfile.TemporaryDirectory() as directory:
            folder = make_folder(kind, d, directory)
            sides = {**torch_sides(folder, d, device, compile_decode=s["compile"]), **keras_sides(folder, d)}
        compile_started = time.perf_counter()
        for _, generate in (fns for side, fns in sides.items() if "torch.compile" in side):
            generate()  # the compile, outside the timing
        compile_s = time.perf_counter() - compile_started
        jobs = (("train step", f"causal-LM train step (fwd+bwd+AdamW), {at}, batch {d['batch']}, T {d['seq']}",
                 0, d["batch"] * d["seq"], d["train_repeat"]),
                ("generate", f"greedy generate, {at}, batch {d['gen_batch']}, {d['new_tokens']} new tokens "
                 f"from {d['prompt']}-token prompts", 1, d["gen_batch"] * d["new_tokens"], d["gen_repeat"]))
        for job, case, which, tokens, repeat in jobs:
            timings = interleaved({side: fns[which] for side, fns in sides.items() if fns[which] is not None},
                                  repeat, d["warmup"], sync)
            rows += [row("decoders", case, side, t, round(tokens / t["median_s"]), "tokens/s")
                     for side, t in timings.items()]
            ms = {side: 1e3 * t["median_s"] for side, t in timings.items()}
            comparisons.append(comparison("decoders", f"{name}: transformers / ours {job} time",
                                          ms["transformers (pytorch)"], ms["ours (pytorch)"], target=1.0))
            if "ours (pytorch, torch.compile)" in ms:
                comparisons.append(comparison("decoders", f"{name}: ours eager / torch.compile {job} time",
                                              ms["ours (pytorch)"], ms["ours (pytorch, torch.compile)"],
                                              note=f"> 1: jit_compile=True pays; its first call compiled in {compile_s:.0f} s"))
            peer = next((side for side in ms if side.startswith("keras-hub")), None)
            if peer is None:
                comparisons.append({"suite": "decoders", "comparison": f"{name}: keras-hub / ours {job} time",
                                    "ratio": None, "target": 1.0, "met": None, "note": f"skipped: {KERAS_HUB_MISSING}"})
            else:
                comparisons.append(comparison("decoders", f"{name}: keras-hub / ours {job} time",
                                              ms[peer], ms["ours (keras, XLA)"], target=1.0))
    return rows, comparisons
