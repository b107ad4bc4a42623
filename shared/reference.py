"""NumPy reference math: the numbers PyTorch and TensorFlow are checked against.

Each function states its formula in the notation of the seed documents and is written for
clarity, not speed. Shapes: B batch, T time, V vocabulary, C hidden, H heads, hs head size.
Masks are 1 (or True) on positions that count.
"""

from __future__ import annotations

import math

import numpy as np

from shared.constants import ATTENTION_MASK_FILL, GRPO_EPS, IGNORE_INDEX, LAYER_NORM_EPS, WHITEN_EPS

_erf = np.vectorize(math.erf, otypes=[np.float64])


# ----------------------------------------------------------------------------- ops

def softmax(x, axis=-1):
    """softmax(x)_i = exp(x_i - max x) / sum_j exp(x_j - max x)."""
    z = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return z / np.sum(z, axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    """log softmax(x)_i = x_i - max x - log sum_j exp(x_j - max x)."""
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def gelu(x):
    """GELU(x) = x Phi(x) = 0.5 x (1 + erf(x / sqrt(2)))."""
    return 0.5 * x * (1.0 + _erf(np.asarray(x, dtype=np.float64) / math.sqrt(2.0))).astype(np.asarray(x).dtype)


def layer_norm(x, weight, bias, eps=LAYER_NORM_EPS):
    """LayerNorm(x) = (x - mean) / sqrt(var + eps) * weight + bias, biased var over the last axis."""
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def linear(x, weight, bias=None):
    """y = x W^T + b, with W stored (out, in) as in PyTorch and Hugging Face."""
    y = x @ weight.T
    return y if bias is None else y + bias


# ----------------------------------------------------------------------------- attention

def scaled_dot_product_attention(q, k, v, mask=None):
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V.

    q (..., Tq, hs), k and v (..., Tk, hs), mask broadcastable to (..., Tq, Tk), True = attend.
    Returns (output (..., Tq, hs), weights (..., Tq, Tk)).
    """
    d_k = q.shape[-1]
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(d_k)
    if mask is not None:
        scores = np.where(mask, scores, ATTENTION_MASK_FILL)
    weights = softmax(scores, -1)
    return weights @ v, weights


def multi_head_attention(x, w_q, b_q, w_k, b_k, w_v, b_v, w_o, b_o, num_heads, mask=None):
    """MultiHead(X) = Concat(head_1, ..., head_h) W^O, head_i = Attention(X W_i^Q, X W_i^K, X W_i^V).

    x (B, T, C); weights (out, in). Returns (output (B, T, C), weights (B, H, T, T)).
    """
    B, T, C = x.shape
    hs = C // num_heads

    def split(y):  # (B, T, C) -> (B, H, T, hs)
        return y.reshape(B, T, num_heads, hs).transpose(0, 2, 1, 3)

    q, k, v = split(linear(x, w_q, b_q)), split(linear(x, w_k, b_k)), split(linear(x, w_v, b_v))
    context, weights = scaled_dot_product_attention(q, k, v, mask)
    concat = context.transpose(0, 2, 1, 3).reshape(B, T, C)
    return linear(concat, w_o, b_o), weights


def transformer_block(x, p, prefix, num_heads, mask=None, eps=LAYER_NORM_EPS):
    """Post-LN block: h = LN(x + MHA(x)); out = LN(h + W_2 GELU(W_1 h)). `p` maps HF names to arrays.

    Returns (out (B, T, C), the attention probabilities (B, H, T, T)).
    """
    a = prefix + "attention."
    attn, weights = multi_head_attention(
        x, p[a + "self.query.weight"], p[a + "self.query.bias"], p[a + "self.key.weight"],
        p[a + "self.key.bias"], p[a + "self.value.weight"], p[a + "self.value.bias"],
        p[a + "output.dense.weight"], p[a + "output.dense.bias"], num_heads, mask)
    h = layer_norm(x + attn, p[a + "output.LayerNorm.weight"], p[a + "output.LayerNorm.bias"], eps)
    ff = linear(gelu(linear(h, p[prefix + "intermediate.dense.weight"], p[prefix + "intermediate.dense.bias"])),
                p[prefix + "output.dense.weight"], p[prefix + "output.dense.bias"])
    out = layer_norm(h + ff, p[prefix + "output.LayerNorm.weight"], p[prefix + "output.LayerNorm.bias"], eps)
    return out, weights


def model_hidden_states(p, input_ids, mask, config, position_ids=None):
    """Embeddings -> N post-LN blocks, every layer kept.

    mask: the boolean (B, 1, T, T) attention mask of `shared.data.build_attention_mask`.
    Returns (hidden states: N + 1 arrays (B, T, C), the embeddings' output then each block's;
    attention probabilities: N arrays (B, H, T, T)).
    """
    B, T = input_ids.shape
    position_ids = np.broadcast_to(np.arange(T), (B, T)) if position_ids is None else position_ids
    e = "bert.embeddings."
    x = (p[e + "word_embeddings.weight"][input_ids] + p[e + "position_embeddings.weight"][position_ids]
         + p[e + "token_type_embeddings.weight"][np.zeros_like(input_ids)])
    hidden_states = [layer_norm(x, p[e + "LayerNorm.weight"], p[e + "LayerNorm.bias"], config.layer_norm_eps)]
    attentions = []
    for i in range(config.num_hidden_layers):
        x, weights = transformer_block(hidden_states[-1], p, f"bert.encoder.layer.{i}.", config.num_attention_heads,
                                       mask, config.layer_norm_eps)
        hidden_states.append(x)
        attentions.append(weights)
    return hidden_states, attentions


def model_logits(p, input_ids, mask, config, position_ids=None):
    """The whole model: embeddings -> N post-LN blocks -> tied LM head. Returns (B, T, V).

    mask: the boolean (B, 1, T, T) attention mask of `shared.data.build_attention_mask`.
    """
    hidden_states, _ = model_hidden_states(p, input_ids, mask, config, position_ids)
    x, e = hidden_states[-1], "bert.embeddings."
    t = "cls.predictions.transform."
    h = layer_norm(gelu(linear(x, p[t + "dense.weight"], p[t + "dense.bias"])),
                   p[t + "LayerNorm.weight"], p[t + "LayerNorm.bias"], config.layer_norm_eps)
    return linear(h, p[e + "word_embeddings.weight"], p["cls.predictions.bias"])


# ----------------------------------------------------------------------------- decoders: GPT-2 and Llama
# The building blocks of the two decoder families (torch_impl/gpt2.py, torch_impl/llama.py), then
# each whole model from its state dict in the torch_impl layout (every weight (out, in)). Extra
# shape letters: Hkv key/value heads, n_rep = H / Hkv query heads per key/value head.

def gelu_new(x):
    """GPT-2's GELU, the tanh form: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def rms_norm(x, weight, eps):
    """RMSNorm(x) = weight * x / sqrt(mean(x^2) + eps), over the last axis (Zhang & Sennrich 2019)."""
    return weight * x / np.sqrt(np.mean(x ** 2, axis=-1, keepdims=True) + eps)


def rotary_cos_sin(position_ids, head_dim, theta, dtype=np.float64):
    """cos and sin (B, T, hs) of the rotary angles p theta_i, theta_i = theta^(-2i/hs), i < hs/2,
    each written twice: the rotate-half layout pairs dimension i with i + hs/2 (Su et al. 2021)."""
    inv_freq = float(theta) ** (-np.arange(0, head_dim, 2) / head_dim)     # (hs/2,)
    angles = np.asarray(position_ids, dtype=np.float64)[..., None] * inv_freq  # (B, T, hs/2)
    angles = np.concatenate([angles, angles], -1)                          # (B, T, hs)
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


def rotate_half(x):
    """(x1, x2) -> (-x2, x1) on the two halves of the last axis."""
    x1, x2 = np.split(x, 2, axis=-1)
    return np.concatenate([-x2, x1], -1)


def apply_rotary(x, cos, sin):
    """RoPE, rotate-half form: x cos + rotate_half(x) sin. x (B, H, T, hs); cos, sin (B, T, hs)."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


def apply_rotary_complex(x, position_ids, theta):
    """RoPE as Su et al. write it: each pair (x_i, x_{i + hs/2}) is the complex number
    z_i = x_i + i x_{i + hs/2}, multiplied by exp(i p theta^(-2i/hs)).

    x (B, H, T, hs), position_ids (B, T) -> (B, H, T, hs). Independent of `apply_rotary`.
    """
    half = x.shape[-1] // 2
    z = x[..., :half] + 1j * x[..., half:]                                 # (B, H, T, hs/2)
    freqs = float(theta) ** (-2.0 * np.arange(half) / x.shape[-1])         # (hs/2,)
    rotation = np.exp(1j * np.asarray(position_ids, dtype=np.float64)[:, None, :, None] * freqs)  # (B, 1, T, hs/2)
    w = z * rotation
    return np.concatenate([w.real, w.imag], -1)


def swiglu(gate, up):
    """SwiGLU's elementwise part (Shazeer 2020): silu(gate) * up, silu(z) = z / (1 + exp(-z))."""
    return gate / (1.0 + np.exp(-gate)) * up


def repeat_kv(x, n_rep):
    """(B, Hkv, T, hs) -> (B, Hkv n_rep, T, hs): head j of the output is key/value head j // n_rep."""
    return np.repeat(x, n_rep, axis=1)


def grouped_query_attention(q, k, v, mask=None):
    """Grouped-query attention (Ainslie et al. 2023): query head j attends with key/value head
    j // n_rep. Computed by grouping the queries, not by repeating K and V:

        q (B, H, T, hs) -> (B, Hkv, n_rep, T, hs);  softmax(Q_g K_g^T / sqrt(hs)) V_g per group g.

    k, v (B, Hkv, Tk, hs); mask broadcastable to (B, 1, T, Tk). Returns (output (B, H, T, hs),
    weights (B, H, T, Tk)).
    """
    B, H, T, hs = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    n_rep = H // Hkv
    q_grouped = q.reshape(B, Hkv, n_rep, T, hs)                            # (B, Hkv, n_rep, T, hs)
    scores = q_grouped @ np.swapaxes(k, -1, -2)[:, :, None] / math.sqrt(hs)  # (B, Hkv, n_rep, T, Tk)
    if mask is not None:
        scores = np.where(np.asarray(mask)[:, :, None], scores, ATTENTION_MASK_FILL)
    weights = softmax(scores, -1)
    output = weights @ v[:, :, None]                                       # (B, Hkv, n_rep, T, hs)
    return output.reshape(B, H, T, hs), weights.reshape(B, H, T, Tk)


def _split_heads(x, heads):
    """(B, T, heads hs) -> (B, heads, T, hs)."""
    B, T, _ = x.shape
    return x.reshape(B, T, heads, -1).transpose(0, 2, 1, 3)


def _merge_heads(x):
    """(B, heads, T, hs) -> (B, T, heads hs)."""
    B, heads, T, hs = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, heads * hs)


def _position_ids(input_ids, position_ids):
    B, T = input_ids.shape
    return np.broadcast_to(np.arange(T), (B, T)) if position_ids is None else position_ids


def gpt2_block(x, p, prefix, config, mask=None):
    """Pre-LN block (Radford et al. 2019), GPT2Config `config`; `p` maps torch_impl names to arrays:

        h = x + W_proj Attention(LN_1(x) W_attn -> q, k, v);   out = h + W_2 GELU(W_1 LN_2(h)).

    Returns (out (B, T, C), the attention probabilities (B, H, T, T)).
    """
    a, m, eps = prefix + "attn.", prefix + "mlp.", config.layer_norm_epsilon
    n = layer_norm(x, p[prefix + "ln_1.weight"], p[prefix + "ln_1.bias"], eps)
    q, k, v = np.split(linear(n, p[a + "c_attn.weight"], p[a + "c_attn.bias"]), 3, axis=-1)  # 3 x (B, T, C)
    context, weights = scaled_dot_product_attention(*(_split_heads(y, config.n_head) for y in (q, k, v)), mask)
    h = x + linear(_merge_heads(context), p[a + "c_proj.weight"], p[a + "c_proj.bias"])
    act = gelu if config.activation_function == "gelu" else gelu_new
    n = layer_norm(h, p[prefix + "ln_2.weight"], p[prefix + "ln_2.bias"], eps)
    ff = linear(act(linear(n, p[m + "c_fc.weight"], p[m + "c_fc.bias"])), p[m + "c_proj.weight"], p[m + "c_proj.bias"])
    return h + ff, weights


def gpt2_logits(p, input_ids, mask, config, position_ids=None, return_hidden_states=False):
    """GPT-2: wte[ids] + wpe[positions] -> N pre-LN blocks -> LN_f -> logits h W_lm^T (B, T, V),
    W_lm = wte when the config ties them.

    mask: the boolean (B, 1, T, T) mask of `shared.data.build_attention_mask`. With
    return_hidden_states also every block's input and LN_f's output (N + 1 arrays (B, T, C),
    as `transformers`' hidden_states).
    """
    x = p["transformer.wte.weight"][input_ids] + p["transformer.wpe.weight"][_position_ids(input_ids, position_ids)]
    hidden_states = []
    for i in range(config.n_layer):
        hidden_states.append(x)
        x, _ = gpt2_block(x, p, f"transformer.h.{i}.", config, mask)
    x = layer_norm(x, p["transformer.ln_f.weight"], p["transformer.ln_f.bias"], config.layer_norm_epsilon)
    hidden_states.append(x)
    logits = linear(x, p["transformer.wte.weight" if config.tie_word_embeddings else "lm_head.weight"])
    return (logits, hidden_states) if return_hidden_states else logits


def llama_block(x, p, prefix, config, cos, sin, mask=None):
    """Pre-norm Llama block (Touvron et al. 2023), LlamaConfig `config`, GQA with Hkv key/value heads:

        h = x + W_o GQA(RoPE(n W_q), RoPE(n W_k), n W_v),  n = RMSNorm(x);
        out = h + W_down (silu(n W_gate) * n W_up),         n = RMSNorm(h).

    Biases where the state has them (Qwen2: q, k, v). cos, sin (B, T, hs) of `rotary_cos_sin`.
    Returns (out (B, T, C), the attention probabilities (B, H, T, T)).
    """
    a, m, eps = prefix + "self_attn.", prefix + "mlp.", config.rms_norm_eps

    def project(y, name):
        return linear(y, p[name + ".weight"], p.get(name + ".bias"))

    n = rms_norm(x, p[prefix + "input_layernorm.weight"], eps)
    q = apply_rotary(_split_heads(project(n, a + "q_proj"), config.num_attention_heads), cos, sin)  # (B, H, T, hs)
    k = apply_rotary(_split_heads(project(n, a + "k_proj"), config.num_key_value_heads), cos, sin)  # (B, Hkv, T, hs)
    v = _split_heads(project(n, a + "v_proj"), config.num_key_value_heads)
    context, weights = grouped_query_attention(q, k, v, mask)
    h = x + project(_merge_heads(context), a + "o_proj")
    n = rms_norm(h, p[prefix + "post_attention_layernorm.weight"], eps)
    return h + project(swiglu(project(n, m + "gate_proj"), project(n, m + "up_proj")), m + "down_proj"), weights


def llama_logits(p, input_ids, mask, config, position_ids=None, return_hidden_states=False):
    """Llama / Qwen2 / Mistral: embed_tokens[ids] -> N pre-norm blocks (RoPE at the given positions)
    -> RMSNorm -> logits h W_lm^T (B, T, V), W_lm = embed_tokens when the config ties them.

    mask and return_hidden_states as in `gpt2_logits`.
    """
    cos, sin = rotary_cos_sin(_position_ids(input_ids, position_ids), config.head_dim, config.rope_theta)
    x = p["model.embed_tokens.weight"][input_ids]                          # (B, T, C)
    hidden_states = []
    for i in range(config.num_hidden_layers):
        hidden_states.append(x)
        x, _ = llama_block(x, p, f"model.layers.{i}.", config, cos, sin, mask)
    x = rms_norm(x, p["model.norm.weight"], config.rms_norm_eps)
    hidden_states.append(x)
    logits = linear(x, p["model.embed_tokens.weight" if config.tie_word_embeddings else "lm_head.weight"])
    return (logits, hidden_states) if return_hidden_states else logits


def lora_merge(weight, lora_A, lora_B, alpha, rank):
    """A LoRA-adapted weight (Hu et al. 2021) merged: W + (alpha / r) B A, with W (out, in),
    A (r, in), B (out, r). The adapted layer computes x W^T + (alpha / r) (x A^T) B^T, the same map."""
    return weight + (alpha / rank) * lora_B @ lora_A


# ----------------------------------------------------------------------------- language-model losses

def masked_mean(x, mask=None):
    """sum(x * m) / sum(m); the plain mean without a mask."""
    if mask is None:
        return np.mean(x)
    mask = np.asarray(mask, dtype=x.dtype)
    return np.sum(x * mask) / np.sum(mask)


def token_nll(logits, labels, ignore_index=IGNORE_INDEX):
    """-log softmax(z_t)[y_t] per position, 0 where y_t == ignore_index: (..., V), (...) -> (...)."""
    keep = labels != ignore_index
    picked = np.take_along_axis(log_softmax(logits), np.where(keep, labels, 0)[..., None], -1)[..., 0]
    return np.where(keep, -picked, 0.0)


def cross_entropy(logits, labels, ignore_index=IGNORE_INDEX):
    """CE = -(1/N) sum_{i: y_i != ignore} log softmax(z_i)[y_i], N = number of labelled positions."""
    return np.sum(token_nll(logits, labels, ignore_index)) / np.sum(labels != ignore_index)


def shift_for_next_token(logits, labels):
    """Pair the logits at t with the label at t + 1: (B, T, V), (B, T) -> (B, T-1, V), (B, T-1)."""
    return logits[:, :-1], labels[:, 1:]


def completion_only_loss(logits, labels, ignore_index=IGNORE_INDEX):
    """Next-token CE: logits at t predict labels at t + 1; prompt positions carry ignore_index."""
    return cross_entropy(*shift_for_next_token(logits, labels), ignore_index)


def categorical_log_prob(logits, actions):
    """log pi(a | s) = log softmax(z)[a], per position: logits (B, T, V), actions (B, T) -> (B, T)."""
    return np.take_along_axis(log_softmax(logits), actions[..., None], -1)[..., 0]


def sequence_log_prob(logits, tokens, mask=None):
    """Chain rule: log P(w_1..w_m) = sum_i log P(w_i | w_<i). logits[:, i] scores tokens[:, i]. -> (B,)"""
    logp = categorical_log_prob(logits, tokens)
    if mask is not None:
        logp = logp * mask
    return logp.sum(-1)


def entropy_from_logits(logits):
    """H(pi) = -sum_a pi(a) log pi(a), per position: (B, T, V) -> (B, T)."""
    logp = log_softmax(logits)
    return -np.sum(np.exp(logp) * logp, -1)


def k3(logprobs, ref_logprobs):
    """Per token, k3 = (r - 1) - log r, r = ref(a) / pi(a): unbiased for KL(pi || ref), always >= 0
    (expm1 keeps the digits of r - 1 when r is near 1, where exp(log r) - 1 loses them)."""
    log_r = ref_logprobs - logprobs
    return np.expm1(log_r) - log_r


def kl_to_reference(logprobs, ref_logprobs, estimator="k1", mask=None):
    """Monte-Carlo KL(pi || ref) from samples of pi (Schulman, "Approximating KL divergence").

    With log r = log ref(a) - log pi(a):  k1 = -log r,  k3 = (r - 1) - log r  (>= 0, lower variance).
    """
    if estimator == "k1":
        kl = logprobs - ref_logprobs
    elif estimator == "k3":
        kl = k3(logprobs, ref_logprobs)
    else:
        raise ValueError(f"estimator must be 'k1' or 'k3', got {estimator!r}")
    return masked_mean(kl, mask)


def whiten(x, mask=None, shift_mean=True, eps=WHITEN_EPS):
    """(x - mean) / sqrt(var + eps) over the masked entries, var biased (as tf.nn.moments).

    shift_mean=False adds the mean back (used for rewards: rescale, keep the sign).
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) / np.sqrt(var + eps)
    return out if shift_mean else out + mean


# ----------------------------------------------------------------------------- RL

def gae(rewards, values, gamma, lam, mask=None):
    """Generalised advantage estimation (Schulman et al. 2016) for episodes (B, T).

    delta_t = r_t + gamma V_{t+1} - V_t,   A_t = delta_t + gamma lam A_{t+1}.

    The steps of an episode are its unmasked positions, whatever lies around them: t + 1 means
    the next unmasked position, so left padding is skipped and a hole in the mask (masked tokens
    between two unmasked ones) is passed over, not taken for the end of the episode. The episode
    ends at its last unmasked step (V and A after it are 0). Masked positions get A = 0 and
    return 0, and their rewards and values are not used; a row with no unmasked position is all
    zeros. Returns (A, A + V).
    """
    B, T = rewards.shape
    mask = np.ones_like(rewards) if mask is None else np.asarray(mask, dtype=rewards.dtype)
    advantages = np.zeros_like(rewards)
    next_value = np.zeros(B, dtype=rewards.dtype)      # V and A of the next unmasked step
    next_advantage = np.zeros(B, dtype=rewards.dtype)
    for t in reversed(range(T)):
        step = mask[:, t] > 0                          # (B,) is t a step of the episode?
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = np.where(step, advantage, 0.0)
        next_value = np.where(step, values[:, t], next_value)  # a masked t passes them on
        next_advantage = np.where(step, advantage, next_advantage)
    return advantages, (advantages + values) * mask


def ppo_clip_loss(logprobs, old_logprobs, advantages, clip_range, mask=None):
    """L^CLIP = mean_t max(-A_t r_t, -A_t clip(r_t, 1 - eps, 1 + eps)),  r_t = exp(logp - logp_old).

    Returns (loss, clipfrac, update_kl): the share of tokens where the clipped term is taken,
    and the k3 estimate of KL(old || new).
    """
    logratio = logprobs - old_logprobs
    ratio = np.exp(logratio)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * np.clip(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(np.maximum(pg_loss1, pg_loss2), mask)
    clipfrac = masked_mean((pg_loss2 > pg_loss1).astype(logprobs.dtype), mask)
    update_kl = masked_mean((ratio - 1.0) - logratio, mask)  # how far this update moved the policy
    return loss, clipfrac, update_kl


def value_loss(values, old_values, returns, clip_range_value, mask=None):
    """PPO2's clipped value loss: 0.5 mean max((V - R)^2, (V_clip - R)^2),
    V_clip = V_old + clip(V - V_old, -c, c). Returns (loss, clipfrac)."""
    v_clipped = old_values + np.clip(values - old_values, -clip_range_value, clip_range_value)
    v_loss_unclipped = (values - returns) ** 2
    v_loss_clipped = (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(np.maximum(v_loss_unclipped, v_loss_clipped), mask)
    clipfrac = masked_mean((v_loss_clipped > v_loss_unclipped).astype(values.dtype), mask)
    return loss, clipfrac


def kl_penalty_rewards(scores, logprobs, ref_logprobs, kl_coef, mask):
    """Per-token reward r_t = -beta (log pi(a_t) - log ref(a_t)) on unmasked tokens, plus the score
    at the last unmasked token (as lm-human-preferences and TRL). Returns (rewards (B, T), kl (B, T)).

    "Last unmasked" is the largest t with mask 1, wherever the row's padding is (right, left, or
    holes inside). A row with no unmasked token has no token to credit: its score is dropped and
    its rewards and KL are all 0.
    """
    mask = np.asarray(mask, dtype=logprobs.dtype)
    kl = (logprobs - ref_logprobs) * mask
    positions = np.arange(mask.shape[1])                                   # (T,)
    last = np.max(np.where(mask > 0, positions, -1), axis=-1)              # (B,), -1 if empty
    score_at_last = (positions == last[:, None]) * scores[:, None]         # (B, T)
    return -kl_coef * kl + score_at_last, kl


def bradley_terry_loss(chosen_scores, rejected_scores):
    """-mean log sigmoid(s_chosen - s_rejected) = mean softplus(s_rejected - s_chosen)."""
    return np.mean(np.logaddexp(0.0, rejected_scores - chosen_scores))


# ----------------------------------------------------------------------------- the policy-gradient family

def reinforce_loss(logprobs, advantages, mask=None):
    """REINFORCE (Williams 1992): L = -mean_t A_t log pi(a_t | s_t), the mean over unmasked tokens.

    Its gradient, -mean_t A_t grad log pi(a_t | s_t), is the policy gradient with the advantages
    held fixed. It equals the gradient of PPO's clipped surrogate at ratio 1 (the first minibatch
    of an iteration): there d r_t / d theta = grad log pi(a_t | s_t) and no clip is active.
    """
    return masked_mean(-advantages * logprobs, mask)


def rloo_advantages(rewards, k):
    """REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024): rows are groups of k
    samples of one prompt, in order; each sample's baseline is the mean reward of the other k - 1:

        A_i = R_i - (1 / (k - 1)) sum_{j != i} R_j.     rewards (B,), B a multiple of k -> (B,)
    """
    groups = rewards.reshape(-1, k)                                        # (B / k, k)
    others = (groups.sum(-1, keepdims=True) - groups) / (k - 1)
    return (groups - others).reshape(-1)


def grpo_advantages(scores, group_size, eps=GRPO_EPS):
    """GRPO's group-relative advantage (Shao et al. 2024): rows are groups of G samples of one
    prompt, in order;

        A_i = (s_i - mean_g s) / (std_g s + eps),  std with G - 1 in the denominator (as TRL).
    scores (B,), B a multiple of G -> (B,); every token of completion i gets A_i.
    """
    groups = scores.reshape(-1, group_size)                                # (B / G, G)
    mean = groups.mean(-1, keepdims=True)
    std = np.sqrt(((groups - mean) ** 2).sum(-1, keepdims=True) / (group_size - 1))
    return ((groups - mean) / (std + eps)).reshape(-1)


def grpo_loss(logprobs, old_logprobs, ref_logprobs, advantages, clip_range, kl_coef, mask,
              normalisation="sequence"):
    """GRPO's objective, as a loss (Shao et al. 2024, eq. 3):

        l_t = -min(r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t) + beta k3_t,   r_t = exp(logp - logp_old),
        k3_t = (r'_t - 1) - log r'_t,  r'_t = ref / pi    (`k3`: unbiased, always >= 0)

    averaged by `normalisation`: "sequence" = mean over each row's unmasked tokens, then over rows
    (the paper; an empty row counts as a row of loss 0); "token" = over all unmasked tokens at once.
    Returns (loss, clipfrac, kl): kl the token mean of k3.
    """
    mask = np.asarray(mask, dtype=logprobs.dtype)
    ratio = np.exp(logprobs - old_logprobs)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * np.clip(ratio, 1.0 - clip_range, 1.0 + clip_range)
    kl = k3(logprobs, ref_logprobs)                                        # (B, T)
    per_token = np.maximum(pg_loss1, pg_loss2) + kl_coef * kl              # (B, T)
    if normalisation == "sequence":
        loss = np.mean((per_token * mask).sum(-1) / np.maximum(mask.sum(-1), 1.0))
    elif normalisation == "token":
        loss = masked_mean(per_token, mask)
    else:
        raise ValueError(f"normalisation must be 'sequence' or 'token', got {normalisation!r}")
    clipfrac = masked_mean((pg_loss2 > pg_loss1).astype(logprobs.dtype), mask)
    return loss, clipfrac, masked_mean(kl, mask)


# ----------------------------------------------------------------------------- one loss per RL algorithm
# The loss an algorithm's record names (`shared.algorithms`, field `loss`), in NumPy; the twins in
# torch_impl/losses.py and tf_impl/losses.py stop the gradient of the statistics. Each takes the
# policy's log-probs (B, R), the token-mean entropy, the values (B, R) (None without a critic), the
# minibatch's rollout quantities (`batch`: old_logprobs, ref_logprobs, old_values, advantages,
# returns, response_mask), the PPOConfig and beta; returns (loss, statistics).

def ppo_objective(logprobs, entropy, values, batch, config, kl_coef):
    """PPO: L = L^CLIP + c_V L^V - c_H H (Schulman et al. 2017, eq. 9); beta is in the rewards."""
    pg_loss, clipfrac, approxkl = ppo_clip_loss(logprobs, batch.old_logprobs, batch.advantages, config.clip_range,
                                                batch.response_mask)
    v_loss, vf_clipfrac = value_loss(values, batch.old_values, batch.returns, config.clip_range_value,
                                     batch.response_mask)
    loss = pg_loss + config.vf_coef * v_loss - config.ent_coef * entropy
    ratio_mean = masked_mean(np.exp(logprobs - batch.old_logprobs), batch.response_mask)
    return loss, {"loss/policy": pg_loss, "loss/value": v_loss, "policy/approxkl": approxkl,
                  "policy/clipfrac": clipfrac, "val/clipfrac": vf_clipfrac, "policy/ratio_mean": ratio_mean}


def grpo_objective(logprobs, entropy, values, batch, config, kl_coef):
    """GRPO: L = L^GRPO(log pi, log pi_old, log ref, A; beta) - c_H H (Shao et al. 2024); no critic."""
    pg_loss, clipfrac, kl = grpo_loss(logprobs, batch.old_logprobs, batch.ref_logprobs, batch.advantages,
                                      config.clip_range, kl_coef, batch.response_mask, config.loss_normalisation)
    loss = pg_loss - config.ent_coef * entropy
    return loss, {"loss/policy": pg_loss, "policy/clipfrac": clipfrac, "policy/kl_to_reference": kl}


def reinforce_objective(logprobs, entropy, values, batch, config, kl_coef):
    """REINFORCE and RLOO: L = -mean A log pi - c_H H (Williams 1992); beta is in the rewards."""
    pg_loss = reinforce_loss(logprobs, batch.advantages, batch.response_mask)
    loss = pg_loss - config.ent_coef * entropy
    return loss, {"loss/policy": pg_loss}


def dpo_loss(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    """Direct preference optimisation (Rafailov et al. 2023), from summed completion log-probs:

        L = -mean log sigmoid(beta [(log pi(y_c) - log ref(y_c)) - (log pi(y_r) - log ref(y_r))])

    Returns (loss, chosen_rewards, rejected_rewards): the implicit rewards
    beta (log pi(y) - log ref(y)) of each pair's chosen and rejected completion, (B,) each.
    """
    chosen_rewards = beta * (chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (rejected_logps - ref_rejected_logps)
    loss = np.mean(np.logaddexp(0.0, -(chosen_rewards - rejected_rewards)))  # -log sigmoid(x) = softplus(-x)
    return loss, chosen_rewards, rejected_rewards


def adamw_step(param, grad, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
    """One AdamW step (Loshchilov & Hutter), as torch.optim.AdamW:

    theta <- theta (1 - lr wd);  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
    theta <- theta - lr m_hat / (sqrt(v_hat) + eps),  m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t).
    Returns (param, m, v).
    """
    param = param * (1.0 - lr * weight_decay)
    m = beta1 * m + (1.0 - beta1) * grad
    v = beta2 * v + (1.0 - beta2) * grad ** 2
    m_hat = m / (1.0 - beta1 ** step)
    v_hat = v / (1.0 - beta2 ** step)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def policy_evaluation(P, R, pi, gamma, method="solve", tol=1e-13, max_iterations=100_000):
    """V^pi from the Bellman equation V(s) = sum_a pi(a|s) sum_s' P(s'|s,a) [R(s,a,s') + gamma V(s')].

    P (S, A, S) transition probabilities, R (S, A, S) rewards, pi (S, A). With
    P_pi = sum_a pi P and r_pi = sum_a pi sum_s' P R, V = r_pi + gamma P_pi V, so either
    'solve': V = (I - gamma P_pi)^-1 r_pi, or 'iterate': repeat V <- r_pi + gamma P_pi V.
    """
    P_pi = np.einsum("sa,sat->st", pi, P)
    r_pi = np.einsum("sa,sat,sat->s", pi, P, R)
    if method == "solve":
        return np.linalg.solve(np.eye(len(r_pi)) - gamma * P_pi, r_pi)
    if method != "iterate":
        raise ValueError(f"method must be 'solve' or 'iterate', got {method!r}")
    V = np.zeros_like(r_pi)
    for _ in range(max_iterations):
        V_new = r_pi + gamma * P_pi @ V
        if np.max(np.abs(V_new - V)) < tol:
            return V_new
        V = V_new
    raise RuntimeError("policy evaluation did not converge")
