"""GPT-2 in PyTorch. Mirrored name for name by `tf_impl/gpt2.py`.

Attribute names are those of `transformers`' `GPT2LMHeadModel`, so a GPT-2 folder's
`model.safetensors` loads by name. Pre-LayerNorm blocks (Radford et al. 2019):

    x = x + Dropout(Attention(LayerNorm(x)))
    x = x + Dropout(W_2 GELU(W_1 LayerNorm(x)))

then a final LayerNorm and the LM head tied to the token embeddings. One difference of layout:
`transformers` stores GPT-2's projections as `Conv1D` weights (in, out); here they are plain
`nn.Linear` layers (out, in), as every other model in the project, and `torch_impl.checkpoint`
transposes the four `GPT2_CONV1D_LAYERS` when it reads or writes a folder.

Shape legend: B batch, T time, Tk key length, Tmax cache length, C hidden size, H heads,
hs head size (C / H), V vocabulary, I feed-forward size.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.config import GPT2Config
from torch_impl.model import (LanguageModel, ScalarHead, causal_inputs, decoder_lm_head, fused_attention,
                              scaled_dot_product_attention, write_cache)


# ----------------------------------------------------------------------------- initialisation

def dense(in_features: int, out_features: int, config: GPT2Config) -> nn.Linear:
    """A Linear layer with GPT-2's init: weight N(0, initializer_range), bias 0."""
    layer = nn.Linear(in_features, out_features)
    with torch.no_grad():
        layer.weight.normal_(0.0, config.initializer_range)
        layer.bias.zero_()
    return layer


def embedding(num_embeddings: int, config: GPT2Config) -> nn.Embedding:
    """An embedding table N(0, initializer_range) (GPT-2 has no padding row)."""
    layer = nn.Embedding(num_embeddings, config.n_embd)
    with torch.no_grad():
        layer.weight.normal_(0.0, config.initializer_range)
    return layer


def layer_norm(config: GPT2Config) -> nn.LayerNorm:
    return nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)


def gelu_new(x):
    """GPT-2's GELU, the tanh form: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def activation(config: GPT2Config):
    """The feed-forward activation the config names ("gelu" is the erf form)."""
    return F.gelu if config.activation_function == "gelu" else gelu_new


# ----------------------------------------------------------------------------- layers

class GPT2Attention(nn.Module):
    """Causal multi-head attention; q, k and v come from one projection `c_attn` (C -> 3C)."""

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.num_heads = config.n_head
        self.head_dim = config.head_size
        self.c_attn = dense(config.n_embd, 3 * config.n_embd, config)
        self.c_proj = dense(config.n_embd, config.n_embd, config)
        self.attn_dropout = nn.Dropout(config.attn_pdrop)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)
        self.attn_implementation = config.attn_implementation

    def split_heads(self, x):
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hs)

    def forward(self, hidden_states, mask, cache=None, cache_index=0, output_attentions=False):
        """Returns (output (B, T, C), weights (B, H, T, Tk) or None, (k, v))."""
        query, key, value = self.c_attn(hidden_states).split(self.num_heads * self.head_dim, dim=2)
        q, k, v = self.split_heads(query), self.split_heads(key), self.split_heads(value)  # (B, H, T, hs)
        if cache is not None:
            k = write_cache(cache[0], k, cache_index)                       # (B, H, Tk, hs)
            v = write_cache(cache[1], v, cache_index)
        if self.attn_implementation == "sdpa" and not output_attentions:
            dropout_p = self.attn_dropout.p if self.training else 0.0
            context, weights = fused_attention(q, k, v, mask, dropout_p), None
        else:
            context, weights = scaled_dot_product_attention(q, k, v, mask, self.attn_dropout)
        B, T = context.shape[0], context.shape[2]
        context = context.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim)  # (B, T, C)
        return self.resid_dropout(self.c_proj(context)), weights, (k, v)


class GPT2MLP(nn.Module):
    """W_2 GELU(W_1 x): `c_fc` (C -> I), `c_proj` (I -> C)."""

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.c_fc = dense(config.n_embd, config.intermediate_size, config)
        self.c_proj = dense(config.intermediate_size, config.n_embd, config)
        self.act = activation(config)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states):
        return self.dropout(self.c_proj(self.act(self.c_fc(hidden_states))))  # (B, T, C)


class GPT2Block(nn.Module):
    """One pre-LN block: x + Attention(LayerNorm(x)), then x + MLP(LayerNorm(x))."""

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.ln_1 = layer_norm(config)
        self.attn = GPT2Attention(config)
        self.ln_2 = layer_norm(config)
        self.mlp = GPT2MLP(config)

    def forward(self, hidden_states, mask, cache=None, cache_index=0, output_attentions=False):
        attn_output, weights, present = self.attn(self.ln_1(hidden_states), mask, cache=cache,
                                                  cache_index=cache_index, output_attentions=output_attentions)
        hidden_states = hidden_states + attn_output                         # (B, T, C)
        hidden_states = hidden_states + self.mlp(self.ln_2(hidden_states))
        return hidden_states, weights, present


class GPT2Model(nn.Module):
    """Token + position embeddings, the blocks, the final LayerNorm (`transformer` in GPT2LMHeadModel)."""

    def __init__(self, config: GPT2Config):
        super().__init__()
        self.config = config
        self.wte = embedding(config.vocab_size, config)
        self.wpe = embedding(config.n_positions, config)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList([GPT2Block(config) for _ in range(config.n_layer)])
        self.ln_f = layer_norm(config)

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, cache_index=0,
                output_attentions=False, output_hidden_states=False):
        """Returns (hidden_states (B, T, C), presents, attentions), as `model.Backbone` does.

        attention_mask: (B, Tk) with 1 on real tokens, or a prebuilt boolean (B, 1, T, Tk) mask;
        with a cache, the T new tokens sit at cache_index .. cache_index+T-1 (see `Backbone`).
        output_hidden_states: `attentions` is replaced by every block's input and the final
        output (N + 1 tensors (B, T, C), as `transformers`' `hidden_states`).
        """
        position_ids, mask = causal_inputs(input_ids, attention_mask, position_ids, cache, cache_index)
        hidden_states = self.drop(self.wte(input_ids) + self.wpe(position_ids))  # (B, T, C)
        presents, attentions, every_layer = [], [], []
        for i, block in enumerate(self.h):
            every_layer.append(hidden_states)
            hidden_states, weights, present = block(hidden_states, mask, cache=cache[i] if cache is not None else None,
                                                    cache_index=cache_index, output_attentions=output_attentions)
            presents.append(present)
            attentions.append(weights)
        hidden_states = self.ln_f(hidden_states)
        every_layer.append(hidden_states)
        return hidden_states, presents, every_layer if output_hidden_states else attentions

    def init_cache(self, batch_size: int, max_length: int):
        """An empty fixed-size key/value cache: per block a (key, value) pair of zeros (B, H, Tmax, hs)."""
        weight = self.wte.weight
        shape = (batch_size, self.config.n_head, max_length, self.config.head_size)
        return [(weight.new_zeros(shape), weight.new_zeros(shape)) for _ in range(self.config.n_layer)]


# ----------------------------------------------------------------------------- the model

class GPT2LMHeadModel(LanguageModel):
    """`transformer` + `lm_head` (tied to `transformer.wte` unless the config unties them),
    + an optional value head for PPO."""

    def __init__(self, config: GPT2Config, with_value_head: bool = False):
        super().__init__()
        self.config = config
        self.transformer = GPT2Model(config)
        self.lm_head = decoder_lm_head(config, self.transformer.wte)
        self.value_head = ScalarHead(config) if with_value_head else None

    @property
    def backbone(self) -> GPT2Model:
        return self.transformer
