"""The decoders, GPT-2 and Llama (Qwen2 its variant): their new ops, grouped-query attention, one
pre-norm block, the whole model's logits and every layer, and greedy tokens with the KV cache;
then the same models against `transformers` itself (`library.*`): its GPT2LMHeadModel,
LlamaForCausalLM and Qwen2ForCausalLM built from the same weights give the reference logits,
and its `generate()` the reference greedy tokens.

States are kept in the torch_impl layout (`model.state_dict()`: every weight (out, in), a tied
LM head present under both names). Keras gets the file layout a folder holds (`to_file_layout`:
GPT-2's c_attn / c_proj / c_fc weights (in, out), as `transformers`' Conv1D; tied duplicates left out).

Left-padded batches: a pad query under the causal mask sees no key. The written-out softmax gives
it uniform weights, the fused kernels let it see every key (`fused_attention`'s note); either way
no real token reads it, so the model cases compare the real positions and zero the pad ones.
"""

from __future__ import annotations

import numpy as np
import torch

from sftrl.parity.cases.training import ppo_inputs, ppo_update_keras, ppo_update_torch
from sftrl.parity.cases.common import EXACT, T, TF, np_out
from sftrl.parity.registry import FORWARD_TOL, GRADIENT_TOL, Case
from shared import reference as ref
from shared.config import GPT2Config, LlamaConfig
from shared.data import build_attention_mask, collate
from tf_impl import architectures as tf_architectures
from tf_impl import generate as tf_generate
from tf_impl import gpt2 as tf_gpt2
from tf_impl import llama as tf_llama
from tf_impl import model as tf_model
from tf_impl.convert import assign_numpy_state_dict
from torch_impl import architectures as torch_architectures
from torch_impl import generate as torch_generate
from torch_impl import gpt2 as torch_gpt2
from torch_impl import llama as torch_llama
from torch_impl import model as torch_model
from torch_impl.checkpoint import to_file_layout

# ----------------------------------------------------------------------------- tiny decoders

NO_DROPOUT = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
TINY_DECODER = dict(vocab_size=23, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                    num_attention_heads=4, max_position_embeddings=32)

CONFIGS = {  # hs = 8: four rotary frequencies per head
    "gpt2": GPT2Config(vocab_size=23, n_positions=32, n_embd=32, n_layer=2, n_head=4, **NO_DROPOUT),
    # GQA (2 key/value heads for 4 query heads), untied LM head, rope_theta 500
    "llama": LlamaConfig(**TINY_DECODER, num_key_value_heads=2, rope_theta=500.0),
    # q/k/v with bias, tied LM head, one key/value head (multi-query: n_rep = 4)
    "qwen2": LlamaConfig(**TINY_DECODER, model_type="qwen2", num_key_value_heads=1, tie_word_embeddings=True),
}
MODEL_CLASSES = {"gpt2": (ref.gpt2_logits, torch_gpt2.GPT2LMHeadModel, tf_gpt2.GPT2LMHeadModel),
                 "llama": (ref.llama_logits, torch_llama.LlamaForCausalLM, tf_llama.LlamaForCausalLM),
                 "qwen2": (ref.llama_logits, torch_llama.LlamaForCausalLM, tf_llama.LlamaForCausalLM)}
BACKBONE_CLASSES = {"gpt2": (torch_gpt2.GPT2Model, tf_gpt2.GPT2Model),
                    "llama": (torch_llama.LlamaModel, tf_llama.LlamaModel)}


def decoder_state(config, rng, std=None):
    """Seeded weights for every entry of the torch model's state dict: N(0, std), norm scales
    1 + N(0, 0.1); a tied LM head is the token table, under both names. std = C^(-1/2) keeps each
    projection's output at its input's scale, so the residual stream stays O(1) -- the scale the
    float32 tolerance (1e-5 absolute, ~1e-7 relative round-off) is set for."""
    std = config.hidden_size ** -0.5 if std is None else std
    state = {}
    for name, tensor in torch_architectures.build_model(config).state_dict().items():
        is_scale = name.endswith("weight") and tensor.dim() == 1
        state[name] = 1.0 + rng.normal(0.0, 0.1, tensor.shape) if is_scale else rng.normal(0.0, std, tensor.shape)
    if config.tie_word_embeddings:
        state["lm_head.weight"] = state["transformer.wte.weight" if config.model_type == "gpt2"
                                        else "model.embed_tokens.weight"]
    return state


def keras_layout(state, config):
    """A torch_impl state dict as a folder holds it, which Keras loads: Conv1D weights (in, out),
    no tied duplicate."""
    untied = {k: v for k, v in state.items() if not (config.tie_word_embeddings and k == "lm_head.weight")}
    return to_file_layout(untied, config)


def torch_decoder(config, state, dtype):
    model = torch_architectures.build_model(config).to(getattr(torch, dtype))
    model.load_state_dict({k: T(v) for k, v in state.items()}, strict=True)
    return model.eval()


def keras_decoder(config, state, dtype):
    model = tf_architectures.build_model(config, dtype=dtype)
    assign_numpy_state_dict(model, keras_layout(state, config), "parity")
    return model


def left_padded(rng, lengths, vocab):
    """A left-padded batch (as generation pads prompts) and the position ids that count real tokens."""
    batch = collate([list(rng.integers(1, vocab, size=n)) for n in lengths], pad_id=0, side="left")
    attention_mask = batch["attention_mask"]
    return batch["input_ids"], attention_mask, np.maximum(np.cumsum(attention_mask, -1) - 1, 0)


def real_positions(attention_mask, **outputs):
    """Each (B, T, ...) output with its pad positions zeroed."""
    keep = np.asarray(attention_mask, dtype=bool)
    return {k: np.where(keep.reshape(keep.shape + (1,) * (np.ndim(v) - 2)), v, 0.0) for k, v in outputs.items()}


# ----------------------------------------------------------------------------- ops

def rms_norm_inputs(rng):
    return {"x": rng.normal(2.0, 3.0, size=(4, 7, 32)), "weight": rng.normal(1.0, 0.1, 32), "eps": 1e-6}


def activation_inputs(rng):
    return {"x": rng.normal(0, 3, size=(4, 7, 11))}


def rope_inputs(rng):
    """q-like heads (B, H, T, hs) at arbitrary positions below the tiny models' 32."""
    return {"x": rng.normal(size=(3, 4, 9, 8)), "position_ids": rng.integers(0, 32, size=(3, 9)), "theta": 10000.0}


def rope_reference(d):
    cos, sin = ref.rotary_cos_sin(d["position_ids"], d["x"].shape[-1], d["theta"])
    return {"y": ref.apply_rotary(d["x"], cos, sin), "cos": cos, "sin": sin}


def rope_torch(d, dtype):
    x = T(d["x"])
    cos, sin = torch_llama.rotary_cos_sin(T(d["position_ids"]), x.shape[-1], d["theta"], x.dtype)
    return np_out(y=torch_llama.apply_rotary(x, cos, sin), cos=cos, sin=sin)


def rope_keras(d, dtype):
    x = TF(d["x"])
    cos, sin = tf_llama.rotary_cos_sin(TF(d["position_ids"]), x.shape[-1], d["theta"], x.dtype)
    return np_out(y=tf_llama.apply_rotary(x, cos, sin), cos=cos, sin=sin)


def swiglu_inputs(rng):
    return {"gate": rng.normal(0, 3, size=(4, 7, 48)), "up": rng.normal(0, 3, size=(4, 7, 48))}


CASES = [
    Case("op.rms_norm", "ops", "RMSNorm(x) = weight * x / sqrt(mean(x^2) + eps)", rms_norm_inputs,
         lambda d: {"y": ref.rms_norm(d["x"], d["weight"], d["eps"])},
         lambda d, dt: np_out(y=torch_llama.rms_norm(T(d["x"]), T(d["weight"]), d["eps"])),
         lambda d, dt: np_out(y=tf_llama.rms_norm(TF(d["x"]), TF(d["weight"]), d["eps"])),
         shows=(ref.rms_norm, torch_llama.rms_norm, tf_llama.rms_norm)),
    Case("op.gelu_new", "ops", "GPT-2's GELU: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))", activation_inputs,
         lambda d: {"y": ref.gelu_new(d["x"])},
         lambda d, dt: np_out(y=torch_gpt2.gelu_new(T(d["x"]))),
         lambda d, dt: np_out(y=tf_gpt2.gelu_new(TF(d["x"]))),
         shows=(ref.gelu_new, torch_gpt2.gelu_new, tf_gpt2.gelu_new)),
    Case("op.rope", "ops",
         "RoPE: x cos(p theta_i) + rotate_half(x) sin(p theta_i), theta_i = theta^(-2i/hs), "
         "rotate_half(x1, x2) = (-x2, x1)",
         rope_inputs, rope_reference, rope_torch, rope_keras,
         shows=(ref.apply_rotary, torch_llama.apply_rotary, tf_llama.apply_rotary)),
    Case("op.rope.complex", "ops",
         "RoPE as complex numbers: z_i = x_i + i x_(i+hs/2) times exp(i p theta^(-2i/hs)) = the rotate-half form",
         rope_inputs, lambda d: {"y": ref.apply_rotary_complex(d["x"], d["position_ids"], d["theta"])},
         lambda d, dt: {"y": rope_torch(d, dt)["y"]}, lambda d, dt: {"y": rope_keras(d, dt)["y"]},
         note="The reference is Su et al.'s complex form, written independently of the rotate-half "
              "layout the frameworks (and `transformers`) use: the two layouts pair the same dimensions.",
         shows=(ref.apply_rotary_complex, torch_llama.apply_rotary, tf_llama.apply_rotary)),
    Case("op.swiglu", "ops", "SwiGLU(gate, up) = silu(gate) * up, silu(z) = z sigmoid(z)", swiglu_inputs,
         lambda d: {"y": ref.swiglu(d["gate"], d["up"])},
         lambda d, dt: np_out(y=torch_llama.swiglu(T(d["gate"]), T(d["up"]))),
         lambda d, dt: np_out(y=tf_llama.swiglu(TF(d["gate"]), TF(d["up"]))),
         shows=(ref.swiglu, torch_llama.swiglu, tf_llama.swiglu)),
]


# ----------------------------------------------------------------------------- grouped-query attention

def gqa_inputs(rng):
    """6 query heads, 2 key/value heads (n_rep = 3), causal with right padding."""
    attention_mask = np.array([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4])
    return {"q": rng.normal(size=(3, 6, 7, 8)), "k": rng.normal(size=(3, 2, 7, 8)), "v": rng.normal(size=(3, 2, 7, 8)),
            "mask": build_attention_mask(attention_mask, causal=True)}


def gqa_reference(d):
    output, weights = ref.grouped_query_attention(d["q"], d["k"], d["v"], d["mask"])
    return {"output": output, "weights": weights, "output_fused": output}


def gqa_torch(d, dtype):
    """K and V repeated to every query head, then our attention, written out and fused."""
    q, mask, n_rep = T(d["q"]), T(d["mask"]), d["q"].shape[1] // d["k"].shape[1]
    k, v = torch_llama.repeat_kv(T(d["k"]), n_rep), torch_llama.repeat_kv(T(d["v"]), n_rep)  # (B, H, T, hs)
    output, weights = torch_model.scaled_dot_product_attention(q, k, v, mask)
    return np_out(output=output, weights=weights, output_fused=torch_model.fused_attention(q, k, v, mask))


def gqa_keras(d, dtype):
    q, mask, n_rep = TF(d["q"]), TF(d["mask"]), d["q"].shape[1] // d["k"].shape[1]
    k, v = tf_llama.repeat_kv(TF(d["k"]), n_rep), tf_llama.repeat_kv(TF(d["v"]), n_rep)  # (B, H, T, hs)
    output, weights = tf_model.scaled_dot_product_attention(q, k, v, mask)
    return np_out(output=output, weights=weights, output_fused=tf_model.fused_attention(q, k, v, mask))


CASES += [
    Case("attention.gqa", "attention",
         "GQA: query head j attends with key/value head j // n_rep; grouped queries (NumPy) = K, V repeated "
         "(torch, TF)",
         gqa_inputs, gqa_reference, gqa_torch, gqa_keras,
         shows=(ref.grouped_query_attention, torch_llama.repeat_kv, tf_llama.repeat_kv)),
]


# ----------------------------------------------------------------------------- one pre-norm block

def block_inputs(architecture):
    prefix = "transformer.h.0." if architecture == "gpt2" else "model.layers.0."

    def make(rng):
        state = decoder_state(CONFIGS[architecture], rng)
        attention_mask = np.array([[1] * 6, [1] * 4 + [0] * 2])
        return {"x": rng.normal(size=(2, 6, 32)),
                "params": {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)},
                "position_ids": np.arange(6) + np.array([[0], [7]]),  # the second row as if decoding on
                "mask": build_attention_mask(attention_mask, causal=True)}
    return make


def block_reference(architecture):
    config = CONFIGS[architecture]

    def reference(d):
        if architecture == "gpt2":
            y, weights = ref.gpt2_block(d["x"], d["params"], "", config, d["mask"])
        else:
            cos, sin = ref.rotary_cos_sin(d["position_ids"], config.head_dim, config.rope_theta)
            y, weights = ref.llama_block(d["x"], d["params"], "", config, cos, sin, d["mask"])
        return {"y": y, "weights": weights}
    return reference


def block_torch(architecture):
    """Our block, by the fused kernel (y) and written out (its attention probabilities)."""
    config = CONFIGS[architecture]

    def run(d, dtype):
        x, mask = T(d["x"]), T(d["mask"])
        if architecture == "gpt2":
            block, extra = torch_gpt2.GPT2Block(config), ()
        else:
            block = torch_llama.LlamaDecoderLayer(config)
            extra = torch_llama.rotary_cos_sin(T(d["position_ids"]), config.head_dim, config.rope_theta, x.dtype)
        block = block.to(x.dtype).eval()
        block.load_state_dict({k: T(v) for k, v in d["params"].items()}, strict=True)
        return np_out(y=block(x, mask, *extra)[0], weights=block(x, mask, *extra, output_attentions=True)[1])
    return run


def block_keras(architecture):
    config = CONFIGS[architecture]

    def run(d, dtype):
        x, mask = TF(d["x"]), TF(d["mask"])
        if architecture == "gpt2":
            block, extra = tf_gpt2.GPT2Block(config, name="block", dtype=dtype), ()
        else:
            block = tf_llama.LlamaDecoderLayer(config, name="block", dtype=dtype)
            extra = tf_llama.rotary_cos_sin(TF(d["position_ids"]), config.head_dim, config.rope_theta, x.dtype)
        block(x, mask, *extra)  # build
        assign_numpy_state_dict(block, keras_layout(d["params"], config), "parity")
        return np_out(y=block(x, mask, *extra)[0], weights=block(x, mask, *extra, output_attentions=True)[1])
    return run


CASES += [
    Case("block.gpt2", "block", "pre-LN: h = x + Attn(LN_1(x)); y = h + W_2 GELU_tanh(W_1 LN_2(h))",
         block_inputs("gpt2"), block_reference("gpt2"), block_torch("gpt2"), block_keras("gpt2"),
         shows=(ref.gpt2_block, torch_gpt2.GPT2Block, tf_gpt2.GPT2Block)),
    Case("block.llama", "block",
         "pre-norm: h = x + W_o GQA(RoPE(W_q n), RoPE(W_k n), W_v n), n = RMSNorm(x); "
         "y = h + W_down (silu(W_gate n) * W_up n), n = RMSNorm(h)",
         block_inputs("llama"), block_reference("llama"), block_torch("llama"), block_keras("llama"),
         shows=(ref.llama_block, torch_llama.LlamaDecoderLayer, tf_llama.LlamaDecoderLayer)),
]


# ----------------------------------------------------------------------------- the whole model

def model_inputs(architecture):
    """A left-padded batch, position ids counting real tokens. GPT-2's learned positions need them
    (without, `model.gpt2` misses by ~2.6); RoPE's scores depend on position differences only, so
    for Llama a row's constant offset cancels, and its absolute angles are `op.rope`'s to check."""
    def make(rng):
        input_ids, attention_mask, position_ids = left_padded(rng, [9, 6, 4], CONFIGS[architecture].vocab_size)
        return {"state": decoder_state(CONFIGS[architecture], rng), "input_ids": input_ids,
                "attention_mask": attention_mask, "position_ids": position_ids,
                "mask": build_attention_mask(attention_mask, causal=True)}
    return make


def model_case(architecture):
    config = CONFIGS[architecture]
    reference, torch_class, keras_class = MODEL_CLASSES[architecture]
    formulas = {"gpt2": "logits of wte + wpe -> N pre-LN blocks -> LN_f -> tied LM head",
                "llama": "logits of embed_tokens -> N pre-norm blocks (RoPE theta 500, GQA 4:2) -> RMSNorm "
                         "-> untied LM head",
                "qwen2": "logits of embed_tokens -> N pre-norm blocks (q/k/v bias, GQA 4:1) -> RMSNorm -> tied LM head"}

    def run_torch(d, dtype):
        model = torch_decoder(config, d["state"], dtype)
        logits = model(T(d["input_ids"]), T(d["mask"]), position_ids=T(d["position_ids"]))
        return real_positions(d["attention_mask"], **np_out(logits=logits))

    def run_keras(d, dtype):
        model = keras_decoder(config, d["state"], dtype)
        logits = model(TF(d["input_ids"]), TF(d["mask"]), position_ids=TF(d["position_ids"]))
        return real_positions(d["attention_mask"], **np_out(logits=logits))

    return Case(
        f"model.{architecture}", "model",
        formulas[architecture] + "; a left-padded batch, positions counting real tokens",
        model_inputs(architecture),
        lambda d: real_positions(d["attention_mask"], logits=reference(
            d["state"], d["input_ids"], d["mask"], config, d["position_ids"])),
        run_torch, run_keras, note="Real positions compared; the pad positions are zeroed (see the module's note).",
        shows=(reference, torch_class, keras_class))


def hidden_states_case(architecture):
    """`model.hidden_states.*`: every block's input and the final norm's output (N + 1 of (B, T, C))."""
    config = CONFIGS[architecture]
    reference = MODEL_CLASSES[architecture][0]
    torch_backbone, keras_backbone = BACKBONE_CLASSES[architecture]

    def outputs(attention_mask, hidden_states):
        return real_positions(attention_mask, **np_out(**{f"layer{i}": h for i, h in enumerate(hidden_states)}))

    def run_torch(d, dtype):
        backbone = torch_decoder(config, d["state"], dtype).backbone
        _, _, hidden_states = backbone(T(d["input_ids"]), T(d["mask"]), position_ids=T(d["position_ids"]),
                                       output_hidden_states=True)
        return outputs(d["attention_mask"], hidden_states)

    def run_keras(d, dtype):
        backbone = keras_decoder(config, d["state"], dtype).backbone
        _, _, hidden_states = backbone(TF(d["input_ids"]), TF(d["mask"]), position_ids=TF(d["position_ids"]),
                                       output_hidden_states=True)
        return outputs(d["attention_mask"], hidden_states)

    return Case(
        f"model.hidden_states.{architecture}", "model",
        "h_l = the input of block l, l < N; h_N = the final norm of block N-1's output (`transformers`' hidden_states)",
        model_inputs(architecture),
        lambda d: outputs(d["attention_mask"], reference(d["state"], d["input_ids"], d["mask"], config,
                                                         d["position_ids"], return_hidden_states=True)[1]),
        run_torch, run_keras, note="Real positions compared; the pad positions are zeroed (see the module's note).",
        shows=(reference, torch_backbone, keras_backbone))


CASES += [*(model_case(a) for a in ("gpt2", "llama", "qwen2")),
          *(hidden_states_case(a) for a in ("gpt2", "llama"))]


# ----------------------------------------------------------------------------- greedy generation

GENERATE_STEPS = 8


def generation_inputs(architecture):
    def make(rng):
        lengths = list(rng.integers(2, 8, size=16))
        input_ids, attention_mask, _ = left_padded(rng, lengths, CONFIGS[architecture].vocab_size)
        # std 0.5: sharper logits, so greedy tokens change from step to step (GPT-2 at C^(-1/2)
        # repeats one token); the top two logits stay >= 0.017 apart, far above float32 round-off
        return {"state": decoder_state(CONFIGS[architecture], rng, std=0.5), "input_ids": input_ids,
                "attention_mask": attention_mask}
    return make


def greedy_reference(architecture):
    """Greedy decoding by recomputing the whole sequence with the NumPy model at every step."""
    config = CONFIGS[architecture]
    logits_of = MODEL_CLASSES[architecture][0]

    def reference(d):
        ids, mask, new = d["input_ids"], d["attention_mask"], []
        for _ in range(GENERATE_STEPS):
            position_ids = np.maximum(np.cumsum(mask, -1) - 1, 0)
            token = logits_of(d["state"], ids, build_attention_mask(mask, True), config, position_ids)[:, -1].argmax(-1)
            new.append(token)
            ids = np.concatenate([ids, token[:, None]], 1)
            mask = np.concatenate([mask, np.ones_like(token)[:, None]], 1)
        return {"tokens": np.stack(new, 1).astype(np.float64)}
    return reference


def greedy_case(architecture):
    config = CONFIGS[architecture]

    def run_torch(d, dtype):
        tokens = torch_generate.generate(torch_decoder(config, d["state"], dtype), d["input_ids"],
                                         d["attention_mask"], GENERATE_STEPS)
        return {"tokens": tokens.numpy().astype(np.float64)}

    def run_keras(d, dtype):
        tokens = tf_generate.generate(keras_decoder(config, d["state"], dtype), d["input_ids"],
                                      d["attention_mask"], GENERATE_STEPS, jit_compile=True)
        return {"tokens": tokens.numpy().astype(np.float64)}

    return Case(
        f"generation.greedy.{architecture}", "generation",
        "greedy tokens: KV-cached decoding (torch; TF with the XLA-compiled step) vs recomputing with the NumPy model",
        generation_inputs(architecture), greedy_reference(architecture), run_torch, run_keras, tol=dict(EXACT),
        shows=(MODEL_CLASSES[architecture][0], torch_generate.generate, tf_generate.generate))


CASES += [greedy_case(a) for a in ("gpt2", "llama")]


# ----------------------------------------------------------------------------- against transformers
# The reference is `transformers`' own model of the same config and weights. GPT-2 runs in float64
# throughout there, so float64 is held to 1e-10. Its Llama/Qwen2 compute RMSNorm and the rotary
# cos/sin in float32 whatever the dtype (rounding each to 2^-24 relative), ours in float64 for a
# float64 model: 5 norms and 4 rotary tables of round-off reach logits of size ~5 as ~1e-6, so
# their float64 cases keep the float32 bound, 1e-5 (measured: 7.6e-7 Llama, 4.1e-7 Qwen2).

LIBRARY_TOL = {"gpt2": dict(FORWARD_TOL), "llama": {"float32": 1e-5, "float64": 1e-5},
               "qwen2": {"float32": 1e-5, "float64": 1e-5}}


def transformers_model(architecture, state, dtype):
    """`transformers`' class of this architecture, with our state dict loaded (file layout)."""
    import transformers

    config = CONFIGS[architecture]
    values = {k: v for k, v in config.to_dict().items() if k != "attn_implementation"}
    hf_config = transformers.AutoConfig.for_model(**values)
    model = transformers.AutoModelForCausalLM.from_config(hf_config)  # its default kernel, sdpa
    model = model.to(getattr(torch, dtype)).eval()
    file_state = to_file_layout({k: T(v) for k, v in state.items()}, config)
    model.load_state_dict({k: v.to(getattr(torch, dtype)) for k, v in file_state.items()}, strict=False)
    return model


def library_case(architecture):
    config = CONFIGS[architecture]

    def inputs(rng):
        input_ids, attention_mask, position_ids = left_padded(rng, [9, 6, 4], config.vocab_size)
        return {"state": decoder_state(config, rng), "input_ids": input_ids, "attention_mask": attention_mask,
                "position_ids": position_ids}

    def reference(d, dtype="float64"):
        model = transformers_model(architecture, d["state"], dtype)
        with torch.no_grad():
            logits = model(input_ids=T(d["input_ids"]), attention_mask=T(d["attention_mask"]),
                           position_ids=T(d["position_ids"])).logits
        return real_positions(d["attention_mask"], logits=logits.double().numpy())

    def run_torch(d, dtype):
        model = torch_decoder(config, d["state"], dtype)
        with torch.no_grad():
            logits = model(T(d["input_ids"]), T(d["attention_mask"]), position_ids=T(d["position_ids"]))
        return real_positions(d["attention_mask"], logits=logits.double().numpy())

    def run_keras(d, dtype):
        model = keras_decoder(config, d["state"], dtype)
        logits = model(d["input_ids"], d["attention_mask"], position_ids=d["position_ids"])
        return real_positions(d["attention_mask"], logits=np.asarray(logits, dtype=np.float64))

    name = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[architecture]
    known = architecture != "gpt2"  # transformers' float32 steps show in float64
    return Case(
        f"library.transformers.{architecture}", "model",
        f"logits of our torch and Keras models = transformers.{name}'s on the same weights (left-padded batch)",
        inputs, reference, run_torch, run_keras, tol=LIBRARY_TOL[architecture], reference_name="transformers",
        min_error={"float64": 1e-9} if known else None,
        note=("Known difference (float64): transformers computes RMSNorm and the rotary cos/sin in float32 "
              "whatever the model's dtype; ours keeps float64. The matched case `model." + architecture +
              "` (against the NumPy model in float64) holds 1e-10.") if known else "",
        shows=(None, MODEL_CLASSES[architecture][1], MODEL_CLASSES[architecture][2]))


def library_greedy_case(architecture):
    config = CONFIGS[architecture]
    greedy = greedy_case(architecture)

    def reference(d):
        model = transformers_model(architecture, d["state"], "float64")
        with torch.no_grad():
            out = model.generate(input_ids=T(d["input_ids"]), attention_mask=T(d["attention_mask"]),
                                 max_new_tokens=GENERATE_STEPS, min_new_tokens=GENERATE_STEPS, do_sample=False,
                                 pad_token_id=config.pad_token_id, eos_token_id=None)
        return {"tokens": out[:, d["input_ids"].shape[1]:].numpy().astype(np.float64)}

    return Case(
        f"library.transformers.generate.{architecture}", "generation",
        "greedy tokens of our KV-cached decoding (torch; TF with XLA) = transformers' generate() on the same weights",
        greedy.inputs, reference, greedy.torch, greedy.tf, tol=dict(EXACT), reference_name="transformers",
        shows=(None, torch_generate.generate, tf_generate.generate))


CASES += [*(library_case(a) for a in ("gpt2", "llama", "qwen2")),
          *(library_greedy_case(a) for a in ("gpt2", "llama", "qwen2"))]


# ----------------------------------------------------------------------------- one PPO update on a decoder

def decoder_policy_torch(architecture):
    def build(state, dtype, with_value_head):
        config = CONFIGS[architecture]
        model = torch_architectures.build_model(config, with_value_head=with_value_head).to(getattr(torch, dtype))
        model.load_state_dict({k: T(v) for k, v in state.items()}, strict=True)
        return model.eval()
    return build


def decoder_policy_keras(architecture):
    def build(state, dtype, with_value_head):
        config = CONFIGS[architecture]
        model = tf_architectures.build_model(config, with_value_head=with_value_head, dtype=dtype)
        assign_numpy_state_dict(model, keras_layout(state, config), "parity")
        return model
    return build


def decoder_ppo_case(architecture):
    """training.ppo_update's rollout and K = 4 steps, on a decoder: tf_impl.ppo.PPOTrainer's own
    traced step against its torch twin, every parameter's gradient and every weight after."""
    config, logits_of = CONFIGS[architecture], MODEL_CLASSES[architecture][0]

    def inputs(rng):
        return ppo_inputs(rng, config, decoder_state(config, rng), logits_of)

    def run_torch(d, dtype):
        out = ppo_update_torch(d, dtype, build=decoder_policy_torch(architecture))
        return {k: v for k, v in out.items() if k != "weight/lm_head.weight" or not config.tie_word_embeddings}

    def run_keras(d, dtype):
        return ppo_update_keras(d, dtype, build=decoder_policy_keras(architecture))

    return Case(
        f"training.ppo_update.{architecture}", "training",
        "K = 4 minibatch steps of L^CLIP + c_V L^V - c_H H, global-norm clip, Adam, on a decoder with a value head",
        inputs, None, run_torch, run_keras, tol=dict(GRADIENT_TOL),
        note="As `training.ppo_update`, with the decoder as the policy (Llama: GQA, untied head, rope_theta 500).",
        shows=(None, torch_architectures.build_model, tf_architectures.build_model))


CASES += [decoder_ppo_case("llama")]
