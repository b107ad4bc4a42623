"""Llama, Qwen2 and Mistral in TensorFlow/Keras. Mirrored name for name by `torch_impl/llama.py`.

Keras layer names are the attribute names of `transformers`' `LlamaForCausalLM` (Qwen2ForCausalLM
and MistralForCausalLM use the same), so a variable's path reads as its Hugging Face name
(`model/layers.0/self_attn/q_proj/kernel` is `model.layers.0.self_attn.q_proj.weight`).
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

import keras
import tensorflow as tf

from shared.config import LlamaConfig
from tf_impl import model as bert_model
from tf_impl.model import (LanguageModel, ScalarHead, at_least_float32, causal_inputs, decoder_lm_head,
                           fused_attention, scaled_dot_product_attention, write_cache)


# ----------------------------------------------------------------------------- initialisation

def dense(out_features: int, name: str, config: LlamaConfig, dtype, bias: bool) -> keras.layers.Dense:
    """A Dense layer with Llama's init: kernel N(0, initializer_range), bias (if any) 0."""
    return keras.layers.Dense(out_features, use_bias=bias, name=name, dtype=dtype, bias_initializer="zeros",
                              kernel_initializer=keras.initializers.RandomNormal(0.0, config.initializer_range))


def embedding(num_embeddings: int, name: str, config: LlamaConfig, dtype) -> keras.layers.Embedding:
    """The token table N(0, initializer_range); the pad row is 0 and gets no gradient (stopped in
    `LlamaModel.call`: Keras' Embedding has no padding_idx). BERT's table, with the pad row."""
    return bert_model.embedding(num_embeddings, name, config, dtype, padding_idx=config.pad_token_id)


# ----------------------------------------------------------------------------- the new building blocks

def rms_norm(x, weight, eps: float):
    """RMSNorm(x) = weight * x / sqrt(mean(x^2) + eps), over the last axis, in float32 or wider."""
    x32 = at_least_float32(x)
    variance = tf.reduce_mean(tf.square(x32), -1, keepdims=True)           # (..., 1)
    return weight * tf.cast(x32 * tf.math.rsqrt(variance + eps), x.dtype)


def rotary_cos_sin(position_ids, head_dim: int, theta: float, dtype):
    """cos and sin (B, T, hs) of the rotary angles p * theta^(-2i/hs), i = 0 .. hs/2 - 1, each
    angle written twice (the rotate-half layout: the first half of a head pairs with the second).
    Angles in float32 (or float64 for a float64 model), as `transformers` computes them."""
    angle_dtype = tf.float64 if dtype == tf.float64 else tf.float32
    exponent = tf.cast(tf.range(0, head_dim, 2, dtype=tf.int64), angle_dtype) / head_dim
    inv_freq = 1.0 / (theta ** exponent)                                    # (hs/2,)
    freqs = tf.cast(position_ids, angle_dtype)[..., None] * inv_freq        # (B, T, hs/2)
    angles = tf.concat([freqs, freqs], -1)                                  # (B, T, hs)
    return tf.cast(tf.cos(angles), dtype), tf.cast(tf.sin(angles), dtype)


def rotate_half(x):
    """(x1, x2) -> (-x2, x1) on the two halves of the last axis."""
    x1, x2 = tf.split(x, 2, axis=-1)
    return tf.concat([-x2, x1], -1)


def apply_rotary(x, cos, sin):
    """Rotate each pair (x_i, x_{i + hs/2}) of a head by its angle: x cos + rotate_half(x) sin.

    x: (B, H, T, hs); cos, sin: (B, T, hs)."""
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


def swiglu(gate, up):
    """SwiGLU's elementwise part: silu(gate) * up, silu(z) = z sigmoid(z)."""
    return tf.nn.silu(gate) * up


def repeat_kv(x, n_rep: int):
    """Grouped-query attention: each of the Hkv key/value heads serves n_rep query heads.
    (B, Hkv, T, hs) -> (B, Hkv * n_rep, T, hs), head j of the output is head j // n_rep."""
    return x if n_rep == 1 else tf.repeat(x, n_rep, axis=1)


# ----------------------------------------------------------------------------- layers

class LlamaRMSNorm(keras.layers.Layer):
    def __init__(self, config: LlamaConfig, **kwargs):
        super().__init__(**kwargs)
        self.variance_epsilon = config.rms_norm_eps

    def build(self, input_shape=None):
        # Named "weight", so the variable path reads as the Hugging Face name `...layernorm.weight`.
        self.weight = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="weight")
        self.built = True

    def call(self, hidden_states):
        return rms_norm(hidden_states, self.weight, self.variance_epsilon)


class LlamaAttention(keras.layers.Layer):
    """Causal attention with rotary q/k and Hkv <= H key/value heads (`self_attn`)."""

    def __init__(self, config: LlamaConfig, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        C, hs = config.hidden_size, config.head_dim
        self.q_proj = dense(self.num_heads * hs, "q_proj", config, dtype, config.qkv_bias)
        self.k_proj = dense(self.num_key_value_heads * hs, "k_proj", config, dtype, config.qkv_bias)
        self.v_proj = dense(self.num_key_value_heads * hs, "v_proj", config, dtype, config.qkv_bias)
        self.o_proj = dense(C, "o_proj", config, dtype, config.o_bias)
        self.attention_dropout = keras.layers.Dropout(config.attention_dropout, name="attention_dropout", dtype=dtype)
        self.attn_implementation = config.attn_implementation

    def split_heads(self, x, heads: int):
        B, T = tf.shape(x)[0], tf.shape(x)[1]
        return tf.transpose(tf.reshape(x, [B, T, heads, self.head_dim]), [0, 2, 1, 3])  # (B, heads, T, hs)

    def call(self, hidden_states, mask, cos, sin, cache=None, cache_index=0, output_attentions=False, training=False):
        """Returns (output (B, T, C), weights (B, H, T, Tk) or None, (k, v) with Hkv heads)."""
        q = apply_rotary(self.split_heads(self.q_proj(hidden_states), self.num_heads), cos, sin)  # (B, H, T, hs)
        k = apply_rotary(self.split_heads(self.k_proj(hidden_states), self.num_key_value_heads), cos, sin)
        v = self.split_heads(self.v_proj(hidden_states), self.num_key_value_heads)  # (B, Hkv, T, hs)
        if cache is not None:  # the cache holds Hkv heads: GQA's saving
            k = write_cache(cache[0], k, cache_index)                       # (B, Hkv, Tk, hs)
            v = write_cache(cache[1], v, cache_index)
        n_rep = self.num_heads // self.num_key_value_heads
        k_all, v_all = repeat_kv(k, n_rep), repeat_kv(v, n_rep)            # (B, H, Tk, hs)
        dropout_on = training and self.attention_dropout.rate > 0
        if self.attn_implementation == "sdpa" and not output_attentions and not dropout_on:
            context, weights = fused_attention(q, k_all, v_all, mask), None
        else:
            context, weights = scaled_dot_product_attention(q, k_all, v_all, mask, self.attention_dropout, training)
        B, T = tf.shape(context)[0], tf.shape(context)[2]
        context = tf.transpose(context, [0, 2, 1, 3])                       # (B, T, H, hs)
        context = tf.reshape(context, [B, T, self.num_heads * self.head_dim])  # (B, T, H hs)
        return self.o_proj(context), weights, (k, v)


class LlamaMLP(keras.layers.Layer):
    """SwiGLU: W_down (silu(W_gate x) * W_up x)."""

    def __init__(self, config: LlamaConfig, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        C, I = config.hidden_size, config.intermediate_size
        self.gate_proj = dense(I, "gate_proj", config, dtype, config.mlp_bias)
        self.up_proj = dense(I, "up_proj", config, dtype, config.mlp_bias)
        self.down_proj = dense(C, "down_proj", config, dtype, config.mlp_bias)

    def call(self, hidden_states):
        return self.down_proj(swiglu(self.gate_proj(hidden_states), self.up_proj(hidden_states)))


class LlamaDecoderLayer(keras.layers.Layer):
    """One pre-norm block: x + Attention(RMSNorm(x)), then x + MLP(RMSNorm(x))."""

    def __init__(self, config: LlamaConfig, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.input_layernorm = LlamaRMSNorm(config, name="input_layernorm", dtype=dtype)
        self.self_attn = LlamaAttention(config, name="self_attn", dtype=dtype)
        self.post_attention_layernorm = LlamaRMSNorm(config, name="post_attention_layernorm", dtype=dtype)
        self.mlp = LlamaMLP(config, name="mlp", dtype=dtype)

    def call(self, hidden_states, mask, cos, sin, cache=None, cache_index=0, output_attentions=False, training=False):
        attn_output, weights, present = self.self_attn(self.input_layernorm(hidden_states), mask, cos, sin,
                                                       cache=cache, cache_index=cache_index,
                                                       output_attentions=output_attentions, training=training)
        hidden_states = hidden_states + attn_output                         # (B, T, C)
        hidden_states = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states, weights, present


class LlamaModel(keras.layers.Layer):
    """Token embeddings, the blocks, the final RMSNorm (`model` in LlamaForCausalLM)."""

    def __init__(self, config: LlamaConfig, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.config = config
        self.embed_tokens = embedding(config.vocab_size, "embed_tokens", config, dtype)
        # Named "layers.i" so the variable path reads as the Hugging Face name `model.layers.i`.
        self.layers = [LlamaDecoderLayer(config, name=f"layers.{i}", dtype=dtype)
                       for i in range(config.num_hidden_layers)]
        self.norm = LlamaRMSNorm(config, name="norm", dtype=dtype)

    def call(self, input_ids, attention_mask=None, position_ids=None, cache=None, cache_index=0,
             output_attentions=False, output_hidden_states=False, training=False):
        """Returns (hidden_states (B, T, C), presents, attentions), as `model.Backbone` does;
        output_hidden_states as in `gpt2.GPT2Model`."""
        input_ids = tf.convert_to_tensor(input_ids)
        position_ids, mask = causal_inputs(input_ids, attention_mask, position_ids, cache, cache_index)
        inputs_embeds = self.embed_tokens(input_ids)                        # (B, T, C)
        # torch's padding_idx also stops the lookup's gradient into the pad row; so here.
        is_pad = (input_ids == self.config.pad_token_id)[..., None]
        hidden_states = tf.where(is_pad, tf.stop_gradient(inputs_embeds), inputs_embeds)
        cos, sin = rotary_cos_sin(position_ids, self.config.head_dim, self.config.rope_theta, hidden_states.dtype)
        presents, attentions, every_layer = [], [], []
        for i, layer in enumerate(self.layers):
            every_layer.append(hidden_states)
            hidden_states, weights, present = layer(hidden_states, mask, cos, sin,
                                                    cache=cache[i] if cache is not None else None,
                                                    cache_index=cache_index, output_attentions=output_attentions,
                                                    training=training)
            presents.append(present)
            attentions.append(weights)
        hidden_states = self.norm(hidden_states)
        every_layer.append(hidden_states)
        return hidden_states, presents, every_layer if output_hidden_states else attentions

    def init_cache(self, batch_size: int, max_length: int):
        """An empty fixed-size key/value cache: per block a (key, value) pair (B, Hkv, Tmax, hs)."""
        dtype = self.compute_dtype  # the keys and values' dtype: bfloat16 under mixed precision
        shape = (batch_size, self.config.num_key_value_heads, max_length, self.config.head_dim)
        return [(tf.zeros(shape, dtype), tf.zeros(shape, dtype)) for _ in range(self.config.num_hidden_layers)]


# ----------------------------------------------------------------------------- the model

class LlamaForCausalLM(LanguageModel):
    """`model` + `lm_head` (untied unless the config ties it to `model.embed_tokens`),
    + an optional value head for PPO."""

    def __init__(self, config: LlamaConfig, with_value_head: bool = False, dtype=None, **kwargs):
        super().__init__(dtype=dtype, **kwargs)
        self.config = config
        self.model = LlamaModel(config, name="model", dtype=dtype)
        self.lm_head = decoder_lm_head(config, self.model.embed_tokens, dtype)
        self.value_head = ScalarHead(config, name="value_head", dtype=dtype) if with_value_head else None
        self.build_weights()

    @property
    def backbone(self) -> LlamaModel:
        return self.model
