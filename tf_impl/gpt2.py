"""GPT-2 in TensorFlow/Keras. Mirrored name for name by `torch_impl/gpt2.py`.

Keras layer names are the attribute names of `transformers`' `GPT2LMHeadModel`, so a variable's
path reads as its Hugging Face name (`transformer/h.0/attn/c_attn/kernel` is
`transformer.h.0.attn.c_attn.weight`). Pre-LayerNorm blocks (Radford et al. 2019):

    x = x + Dropout(Attention(LayerNorm(x)))
    x = x + Dropout(W_2 GELU(W_1 LayerNorm(x)))

then a final LayerNorm and the LM head tied to the token embeddings. Layout: `transformers` stores
GPT-2's projections as `Conv1D` weights (in, out), which is a Keras Dense kernel's layout already,
so `tf_impl.convert` does not transpose the `GPT2_CONV1D_LAYERS` (every other kernel it does).

Shape legend: B batch, T time, Tk key length, Tmax cache length, C hidden size, H heads,
hs head size (C / H), V vocabulary, I feed-forward size.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from shared.config import GPT2Config
from tf_impl.model import (LanguageModel, ScalarHead, causal_inputs, decoder_lm_head, fused_attention, gelu,
                           scaled_dot_product_attention, write_cache)


# ----------------------------------------------------------------------------- initialisation

def dense(out_features: int, name: str, config: GPT2Config, dtype) -> keras.layers.Dense:
    """A Dense layer with GPT-2's init: kernel N(0, initializer_range), bias 0."""
    return keras.layers.Dense(out_features, name=name, dtype=dtype, bias_initializer="zeros",
                              kernel_initializer=keras.initializers.RandomNormal(0.0, config.initializer_range))


def embedding(num_embeddings: int, name: str, config: GPT2Config, dtype) -> keras.layers.Embedding:
    """An embedding table N(0, initializer_range) (GPT-2 has no padding row)."""
    return keras.layers.Embedding(num_embeddings, config.n_embd, name=name, dtype=dtype,
                                  embeddings_initializer=keras.initializers.RandomNormal(0.0, config.initializer_range))


def layer_norm(name: str, config: GPT2Config, dtype) -> keras.layers.LayerNormalization:
    return keras.layers.LayerNormalization(epsilon=config.layer_norm_epsilon, name=name, dtype=dtype)


def gelu_new(x):
    """GPT-2's GELU, the tanh form: 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + tf.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * tf.pow(x, 3.0))))


def activation(config: GPT2Config):
    """The feed-forward activation the config names ("gelu" is the erf form)."""
    return gelu if config.activation_function == "gelu" else gelu_new


# ----------------------------------------------------------------------------- layers

class GPT2Attention(keras.layers.Layer):
    """Causal multi-head attention; q, k and v come from one projection `c_attn` (C -> 3C)."""

    def __init__(self, config: GPT2Config, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.num_heads = config.n_head
        self.head_dim = config.head_size
        self.c_attn = dense(3 * config.n_embd, "c_attn", config, dtype)
        self.c_proj = dense(config.n_embd, "c_proj", config, dtype)
        self.attn_dropout = keras.layers.Dropout(config.attn_pdrop, name="attn_dropout", dtype=dtype)
        self.resid_dropout = keras.layers.Dropout(config.resid_pdrop, name="resid_dropout", dtype=dtype)
        self.attn_implementation = config.attn_implementation

    def split_heads(self, x):
        B, T = tf.shape(x)[0], tf.shape(x)[1]
        return tf.transpose(tf.reshape(x, [B, T, self.num_heads, self.head_dim]), [0, 2, 1, 3])  # (B, H, T, hs)

    def call(self, hidden_states, mask, cache=None, cache_index=0, output_attentions=False, training=False):
        """Returns (output (B, T, C), weights (B, H, T, Tk) or None, (k, v))."""
        query, key, value = tf.split(self.c_attn(hidden_states), 3, axis=2)
        q, k, v = self.split_heads(query), self.split_heads(key), self.split_heads(value)  # (B, H, T, hs)
        if cache is not None:
            k = write_cache(cache[0], k, cache_index)                       # (B, H, Tk, hs)
            v = write_cache(cache[1], v, cache_index)
        dropout_on = training and self.attn_dropout.rate > 0
        if self.attn_implementation == "sdpa" and not output_attentions and not dropout_on:
            context, weights = fused_attention(q, k, v, mask), None
        else:
            context, weights = scaled_dot_product_attention(q, k, v, mask, self.attn_dropout, training)
        B, T = tf.shape(context)[0], tf.shape(context)[2]
        context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [B, T, self.num_heads * self.head_dim])  # (B, T, C)
        return self.resid_dropout(self.c_proj(context), training=training), weights, (k, v)


class GPT2MLP(keras.layers.Layer):
    """W_2 GELU(W_1 x): `c_fc` (C -> I), `c_proj` (I -> C)."""

    def __init__(self, config: GPT2Config, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.c_fc = dense(config.intermediate_size, "c_fc", config, dtype)
        self.c_proj = dense(config.n_embd, "c_proj", config, dtype)
        self.act = activation(config)
        self.dropout = keras.layers.Dropout(config.resid_pdrop, name="dropout", dtype=dtype)

    def call(self, hidden_states, training=False):
        return self.dropout(self.c_proj(self.act(self.c_fc(hidden_states))), training=training)  # (B, T, C)


class GPT2Block(keras.layers.Layer):
    """One pre-LN block: x + Attention(LayerNorm(x)), then x + MLP(LayerNorm(x))."""

    def __init__(self, config: GPT2Config, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.ln_1 = layer_norm("ln_1", config, dtype)
        self.attn = GPT2Attention(config, name="attn", dtype=dtype)
        self.ln_2 = layer_norm("ln_2", config, dtype)
        self.mlp = GPT2MLP(config, name="mlp", dtype=dtype)

    def call(self, hidden_states, mask, cache=None, cache_index=0, output_attentions=False, training=False):
        attn_output, weights, present = self.attn(self.ln_1(hidden_states), mask, cache=cache,
                                                  cache_index=cache_index, output_attentions=output_attentions,
                                                  training=training)
        hidden_states = hidden_states + attn_output                         # (B, T, C)
        hidden_states = hidden_states + self.mlp(self.ln_2(hidden_states), training=training)
        return hidden_states, weights, present


class GPT2Model(keras.layers.Layer):
    """Token + position embeddings, the blocks, the final LayerNorm (`transformer` in GPT2LMHeadModel)."""

    def __init__(self, config: GPT2Config, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.config = config
        self.wte = embedding(config.vocab_size, "wte", config, dtype)
        self.wpe = embedding(config.n_positions, "wpe", config, dtype)
        self.drop = keras.layers.Dropout(config.embd_pdrop, name="drop", dtype=dtype)
        # Named "h.i" so the variable path reads as the Hugging Face name `transformer.h.i`.
        self.h = [GPT2Block(config, name=f"h.{i}", dtype=dtype) for i in range(config.n_layer)]
        self.ln_f = layer_norm("ln_f", config, dtype)

    def call(self, input_ids, attention_mask=None, position_ids=None, cache=None, cache_index=0,
             output_attentions=False, output_hidden_states=False, training=False):
        """Returns (hidden_states (B, T, C), presents, attentions), as `model.Backbone` does.

        attention_mask: (B, Tk) with 1 on real tokens, or a prebuilt boolean (B, 1, T, Tk) mask;
        with a cache, the T new tokens sit at cache_index .. cache_index+T-1 (see `Backbone`).
        output_hidden_states: `attentions` is replaced by every block's input and the final
        output (N + 1 tensors (B, T, C), as `transformers`' `hidden_states`).
        """
        input_ids = tf.convert_to_tensor(input_ids)
        position_ids, mask = causal_inputs(input_ids, attention_mask, position_ids, cache, cache_index)
        hidden_states = self.drop(self.wte(input_ids) + self.wpe(position_ids), training=training)  # (B, T, C)
        presents, attentions, every_layer = [], [], []
        for i, block in enumerate(self.h):
            every_layer.append(hidden_states)
            hidden_states, weights, present = block(hidden_states, mask, cache=cache[i] if cache is not None else None,
                                                    cache_index=cache_index, output_attentions=output_attentions,
                                                    training=training)
            presents.append(present)
            attentions.append(weights)
        hidden_states = self.ln_f(hidden_states)
        every_layer.append(hidden_states)
        return hidden_states, presents, every_layer if output_hidden_states else attentions

    def init_cache(self, batch_size: int, max_length: int):
        """An empty fixed-size key/value cache: per block a (key, value) pair of zeros (B, H, Tmax, hs)."""
        dtype = self.compute_dtype  # the keys and values' dtype: bfloat16 under mixed precision
        shape = (batch_size, self.config.n_head, max_length, self.config.head_size)
        return [(tf.zeros(shape, dtype), tf.zeros(shape, dtype)) for _ in range(self.config.n_layer)]


# ----------------------------------------------------------------------------- the model

class GPT2LMHeadModel(LanguageModel):
    """`transformer` + `lm_head` (tied to `transformer.wte` unless the config unties them),
    + an optional value head for PPO."""

    def __init__(self, config: GPT2Config, with_value_head: bool = False, dtype=None, **kwargs):
        super().__init__(dtype=dtype, **kwargs)
        self.config = config
        self.transformer = GPT2Model(config, name="transformer", dtype=dtype)
        self.lm_head = decoder_lm_head(config, self.transformer.wte, dtype)
        self.value_head = ScalarHead(config, name="value_head", dtype=dtype) if with_value_head else None
        self.build_weights()

    @property
    def backbone(self) -> GPT2Model:
        return self.transformer
