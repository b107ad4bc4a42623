"""Llama, Qwen2 and Mistral in PyTorch. Mirrored name for name by `tf_impl/llama.py`.

Attribute names are those of `transformers`' `LlamaForCausalLM` (Qwen2ForCausalLM and
MistralForCausalLM use the same), so such a folder's `model.safetensors` loads by name.
Pre-norm blocks with RMSNorm, rotary positions on q and k, grouped-query attention and a
SwiGLU feed-forward layer (Touvron et al. 2023):

    x = x + W_o Attention(RoPE(W_q n), RoPE(W_k n), W_v n),   n = RMSNorm(x)
    x = x + W_down (silu(W_gate n) * W_up n),                  n = RMSNorm(x)

As `transformers` does, RMSNorm and the rotary angles are computed in float32 (or wider) whatever
the model's dtype, and cast back.

Shape legend: B batch, T time, Tk key length, Tmax cache length, C hidden size, H query heads,
Hkv key/value heads, hs head size, V vocabulary, I feed-forward size.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.config import LlamaConfig
from torch_impl.model import (LanguageModel, ScalarHead, at_least_float32, causal_inputs, decoder_lm_head,
                              fused_attention, scaled_dot_product_attention, write_cache)


# ----------------------------------------------------------------------------- initialisation

def dense(in_features: int, out_features: int, config: LlamaConfig, bias: bool) -> nn.Linear:
    """A Linear layer with Llama's init: weight N(0, initializer_range), bias (if any) 0."""
    layer = nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        layer.weight.normal_(0.0, config.initializer_range)
        if bias:
            layer.bias.zero_()
    return layer


def embedding(num_embeddings: int, config: LlamaConfig) -> nn.Embedding:
    """The token table N(0, initializer_range); the pad row is 0 and gets no gradient."""
    layer = nn.Embedding(num_embeddings, config.hidden_size, padding_idx=config.pad_token_id)
    with torch.no_grad():
        layer.weight.normal_(0.0, config.initializer_range)
        layer.weight[config.pad_token_id].zero_()
    return layer


# ----------------------------------------------------------------------------- the new building blocks

def rms_norm(x, weight, eps: float):
    """RMSNorm(x) = weight * x / sqrt(mean(x^2) + eps), over the last axis, in float32 or wider."""
    x32 = at_least_float32(x)
    variance = x32.pow(2).mean(-1, keepdim=True)                           # (..., 1)
    return weight * (x32 * torch.rsqrt(variance + eps)).to(x.dtype)


def rotary_cos_sin(position_ids, head_dim: int, theta: float, dtype):
    """cos and sin (B, T, hs) of the rotary angles p * theta^(-2i/hs), i = 0 .. hs/2 - 1, each
    angle written twice (the rotate-half layout: the first half of a head pairs with the second).
    Angles in float32 (or float64 for a float64 model), as `transformers` computes them."""
    angle_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device=position_ids.device).to(angle_dtype) / head_dim
    inv_freq = 1.0 / (theta ** exponent)                                    # (hs/2,)
    freqs = position_ids[..., None].to(angle_dtype) * inv_freq              # (B, T, hs/2)
    angles = torch.cat([freqs, freqs], dim=-1)                              # (B, T, hs)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x):
    """(x1, x2) -> (-x2, x1) on the two halves of the last axis."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x, cos, sin):
    """Rotate each pair (x_i, x_{i + hs/2}) of a head by its angle: x cos + rotate_half(x) sin.

    x: (B, H, T, hs); cos, sin: (B, T, hs)."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


def swiglu(gate, up):
    """SwiGLU's elementwise part: silu(gate) * up, silu(z) = z sigmoid(z)."""
    return F.silu(gate) * up


def repeat_kv(x, n_rep: int):
    """Grouped-query attention: each of the Hkv key/value heads serves n_rep query heads.
    (B, Hkv, T, hs) -> (B, Hkv * n_rep, T, hs), head j of the output is head j // n_rep."""
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)


# ----------------------------------------------------------------------------- layers

class LlamaRMSNorm(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(config.hidden_size))
        self.variance_epsilon = config.rms_norm_eps

    def forward(self, hidden_states):
        return rms_norm(hidden_states, self.weight, self.variance_epsilon)


class LlamaAttention(nn.Module):
    """Causal attention with rotary q/k and Hkv <= H key/value heads (`self_attn`)."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        C, hs = config.hidden_size, config.head_dim
        self.q_proj = dense(C, self.num_heads * hs, config, config.qkv_bias)
        self.k_proj = dense(C, self.num_key_value_heads * hs, config, config.qkv_bias)
        self.v_proj = dense(C, self.num_key_value_heads * hs, config, config.qkv_bias)
        self.o_proj = dense(self.num_heads * hs, C, config, config.o_bias)
        self.attention_dropout = nn.Dropout(config.attention_dropout)
        self.attn_implementation = config.attn_implementation

    def split_heads(self, x, heads: int):
        B, T, _ = x.shape
        return x.view(B, T, heads, self.head_dim).transpose(1, 2)           # (B, heads, T, hs)

    def forward(self, hidden_states, mask, cos, sin, cache=None, cache_index=0, output_attentions=False):
        """Returns (output (B, T, C), weights (B, H, T, Tk) or None, (k, v) with Hkv heads)."""
        q = apply_rotary(self.split_heads(self.q_proj(hidden_states), self.num_heads), cos, sin)  # (B, H, T, hs)
        k = apply_rotary(self.split_heads(self.k_proj(hidden_states), self.num_key_value_heads), cos, sin)
        v = self.split_heads(self.v_proj(hidden_states), self.num_key_value_heads)  # (B, Hkv, T, hs)
        if cache is not None:  # the cache holds Hkv heads: GQA's saving
            k = write_cache(cache[0], k, cache_index)                       # (B, Hkv, Tk, hs)
            v = write_cache(cache[1], v, cache_index)
        n_rep = self.num_heads // self.num_key_value_heads
        if self.attn_implementation == "sdpa" and not output_attentions:  # the kernel shares the Hkv heads
            dropout_p = self.attention_dropout.p if self.training else 0.0
            context, weights = fused_attention(q, k, v, mask, dropout_p, enable_gqa=n_rep > 1), None
        else:
            k_all, v_all = repeat_kv(k, n_rep), repeat_kv(v, n_rep)        # (B, H, Tk, hs)
            context, weights = scaled_dot_product_attention(q, k_all, v_all, mask, self.attention_dropout)
        B, T = context.shape[0], context.shape[2]
        context = context.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim)  # (B, T, H hs)
        return self.o_proj(context), weights, (k, v)


class LlamaMLP(nn.Module):
    """SwiGLU: W_down (silu(W_gate x) * W_up x)."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        C, I = config.hidden_size, config.intermediate_size
        self.gate_proj = dense(C, I, config, config.mlp_bias)
        self.up_proj = dense(C, I, config, config.mlp_bias)
        self.down_proj = dense(I, C, config, config.mlp_bias)

    def forward(self, hidden_states):
        return self.down_proj(swiglu(self.gate_proj(hidden_states), self.up_proj(hidden_states)))


class LlamaDecoderLayer(nn.Module):
    """One pre-norm block: x + Attention(RMSNorm(x)), then x + MLP(RMSNorm(x))."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.input_layernorm = LlamaRMSNorm(config)
        self.self_attn = LlamaAttention(config)
        self.post_attention_layernorm = LlamaRMSNorm(config)
        self.mlp = LlamaMLP(config)

    def forward(self, hidden_states, mask, cos, sin, cache=None, cache_index=0, output_attentions=False):
        attn_output, weights, present = self.self_attn(self.input_layernorm(hidden_states), mask, cos, sin,
                                                       cache=cache, cache_index=cache_index,
                                                       output_attentions=output_attentions)
        hidden_states = hidden_states + attn_output                         # (B, T, C)
        hidden_states = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states, weights, present


class LlamaModel(nn.Module):
    """Token embeddings, the blocks, the final RMSNorm (`model` in LlamaForCausalLM)."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = embedding(config.vocab_size, config)
        self.layers = nn.ModuleList([LlamaDecoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.norm = LlamaRMSNorm(config)

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, cache_index=0,
                output_attentions=False, output_hidden_states=False):
        """Returns (hidden_states (B, T, C), presents, attentions), as `model.Backbone` does;
        output_hidden_states as in `gpt2.GPT2Model`."""
        position_ids, mask = causal_inputs(input_ids, attention_mask, position_ids, cache, cache_index)
        hidden_states = self.embed_tokens(input_ids)                        # (B, T, C)
        cos, sin = rotary_cos_sin(position_ids, self.config.head_dim, self.config.rope_theta, hidden_states.dtype)
        presents, attentions, every_layer = [], [], []
        for i, layer in enumerate(self.layers):
            every_layer.append(hidden_states)
            hidden_states, weights, present = layer(hidden_states, mask, cos, sin,
                                                    cache=cache[i] if cache is not None else None,
                                                    cache_index=cache_index, output_attentions=output_attentions)
            presents.append(present)
            attentions.append(weights)
        hidden_states = self.norm(hidden_states)
        every_layer.append(hidden_states)
        return hidden_states, presents, every_layer if output_hidden_states else attentions

    def init_cache(self, batch_size: int, max_length: int):
        """An empty fixed-size key/value cache: per block a (key, value) pair (B, Hkv, Tmax, hs)."""
        weight = self.embed_tokens.weight
        shape = (batch_size, self.config.num_key_value_heads, max_length, self.config.head_dim)
        return [(weight.new_zeros(shape), weight.new_zeros(shape)) for _ in range(self.config.num_hidden_layers)]


# ----------------------------------------------------------------------------- the model

class LlamaForCausalLM(LanguageModel):
    """`model` + `lm_head` (untied unless the config ties it to `model.embed_tokens`),
    + an optional value head for PPO."""

    def __init__(self, config: LlamaConfig, with_value_head: bool = False):
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self.lm_head = decoder_lm_head(config, self.model.embed_tokens)
        self.value_head = ScalarHead(config) if with_value_head else None

    @property
    def backbone(self) -> LlamaModel:
        return self.model
