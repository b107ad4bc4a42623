"""The BERT-style model family in TensorFlow/Keras. Mirrored name for name by `torch_impl/model.py`.

Every Keras sub-layer gets `name=` equal to the PyTorch attribute name, so the Hugging Face
parameter name of a weight is its path of layer names (`tf_impl.convert` walks it) and
converting weights is a name rewrite plus the Dense-kernel transpose. Post-LayerNorm blocks:

    x = LayerNorm(x + Dropout(SelfAttention(x)))
    x = LayerNorm(x + Dropout(W_2 GELU(W_1 x)))

Every `call` with a Dropout under it takes `training=False` (last) and passes it down. Sub-layers
take the dtype policy of the layer that builds them (`dtype=self.dtype_policy`), so a model built
with "mixed_bfloat16" computes in bfloat16 throughout. Each layer is initialised where it is built
(`dense`, `embedding`, `layer_norm` below: Keras initializers, run when the weights are created),
as in the PyTorch file; `config.attn_implementation` picks the fused attention or the written-out one.

Shape legend (the same in both files):
    B batch, T time (= Tq query length), Tk key length, Tmax cache length, C hidden size, H heads,
    hs head size (C / H), V vocabulary, I intermediate (feed-forward) size.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from shared.config import ModelConfig
from shared.constants import ATTENTION_MASK_FILL, IGNORE_INDEX
from tf_impl.losses import completion_only_loss, cross_entropy, shift_for_next_token


# ----------------------------------------------------------------------------- initialisation

def _normal(config: ModelConfig):
    return keras.initializers.RandomNormal(mean=0.0, stddev=config.initializer_range)


def _normal_with_zero_row(config: ModelConfig, row: int):
    """N(0, std) with one row zero: torch's nn.Embedding(padding_idx=row) after init.

    In the initializer, not in `build`: Keras may build a layer while tracing symbolically,
    where an `assign` to the table is never run."""
    normal = _normal(config)

    def initializer(shape, dtype=None):
        table = normal(shape, dtype)                                        # (V, C)
        return tf.tensor_scatter_nd_update(table, [[row]], tf.zeros([1, shape[1]], table.dtype))
    return initializer


def dense(out_features: int, name: str, config: ModelConfig, dtype, zero: bool = False) -> keras.layers.Dense:
    """A Dense layer with BERT's init: kernel N(0, initializer_range), bias 0.

    zero: kernel 0 too (the scalar heads: the first value or reward estimate is 0 for every input).
    """
    return keras.layers.Dense(out_features, name=name, dtype=dtype, bias_initializer="zeros",
                              kernel_initializer="zeros" if zero else _normal(config))


def embedding(num_embeddings: int, name: str, config: ModelConfig, dtype, padding_idx=None) -> keras.layers.Embedding:
    """An embedding table N(0, initializer_range); the padding_idx row ([PAD]) is 0."""
    initializer = _normal(config) if padding_idx is None else _normal_with_zero_row(config, padding_idx)
    return keras.layers.Embedding(num_embeddings, config.hidden_size, embeddings_initializer=initializer,
                                  name=name, dtype=dtype)


def layer_norm(config: ModelConfig, dtype) -> keras.layers.LayerNormalization:
    """LayerNorm over the hidden size: scale 1, shift 0 (Keras' default init)."""
    return keras.layers.LayerNormalization(epsilon=config.layer_norm_eps, name="LayerNorm", dtype=dtype)


def gelu(x):
    """GELU(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))), the exact (erf) form BERT uses.

    Written out rather than `tf.nn.gelu`: that one computes 0.5 x erfc(-x / sqrt(2)), and
    TensorFlow's float64 erfc is off by up to ~5e-9, which breaks float64 parity; erf is exact.
    """
    return 0.5 * x * (1.0 + tf.math.erf(x / math.sqrt(2.0)))


# ----------------------------------------------------------------------------- masks and attention

def build_attention_mask(attention_mask, causal: bool, query_length=None, query_offset=None):
    """Boolean (B, 1, Tq, Tk) mask, True where query i may attend to key j.

    The TensorFlow twin of `shared.data.build_attention_mask` (used when a (B, Tk) padding mask
    is passed instead of the prebuilt 4-D one). Query i sits at key position query_offset + i;
    by default the queries are the last Tq of the Tk positions.
    """
    batch, key_length = tf.shape(attention_mask)[0], tf.shape(attention_mask)[1]
    query_length = key_length if query_length is None else query_length
    query_offset = key_length - query_length if query_offset is None else query_offset
    allowed = tf.cast(attention_mask, tf.bool)[:, None, None, :]           # (B, 1, 1, Tk)
    if causal:
        query_pos = query_offset + tf.range(query_length)[:, None]          # (Tq, 1)
        key_pos = tf.range(key_length)[None, :]                             # (1, Tk)
        allowed = allowed & (key_pos <= query_pos)                          # (B, 1, Tq, Tk)
    return tf.broadcast_to(allowed, [batch, 1, query_length, key_length])  # (B, 1, Tq, Tk)


def write_cache(cache, new, index):
    """Cache (B, H, Tmax, hs) with positions index .. index+T-1 replaced by new (B, H, T, hs).

    A fixed-size cache: shapes never change while decoding (TensorFlow needs that to trace the
    decoding step once; PyTorch uses the same scheme so the two read alike, but writes in place).
    The new rows are placed by a gather whose indices are data, not by a pad whose widths depend
    on index: XLA compiles the step once, not once per index.
    """
    T, Tmax = tf.shape(new)[2], tf.shape(cache)[2]  # dynamic: a relaxed trace may not know Tmax
    position = tf.range(Tmax)                                               # (Tmax,)
    spread = tf.gather(new, tf.clip_by_value(position - index, 0, T - 1), axis=2)  # (B, H, Tmax, hs)
    written = ((position >= index) & (position < index + T))[None, None, :, None]  # (1, 1, Tmax, 1)
    return tf.ensure_shape(tf.where(written, spread, cache), cache.shape)


def scaled_dot_product_attention(q, k, v, mask=None, dropout=None, training=False):
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V.

    q: (B, H, Tq, hs), k and v: (B, H, Tk, hs), mask: bool, broadcastable to (B, H, Tq, Tk),
    True where attending is allowed. Returns (output (B, H, Tq, hs), weights (B, H, Tq, Tk)).
    """
    d_k = q.shape[-1]
    scores = tf.matmul(q, k, transpose_b=True) / math.sqrt(d_k)            # (B, H, Tq, Tk)
    if mask is not None:
        scores = tf.where(mask, scores, tf.cast(ATTENTION_MASK_FILL, scores.dtype))
    weights = tf.nn.softmax(scores, axis=-1)                                # (B, H, Tq, Tk)
    if dropout is not None:
        weights = dropout(weights, training=training)
    return tf.matmul(weights, v), weights                                   # (B, H, Tq, hs)


def fused_attention(q, k, v, mask=None):
    """The same Attention(Q, K, V) by Keras' keras.ops.dot_product_attention (one op in the
    graph, softmax in float32 or wider; it returns no weights and has no dropout). Shapes as
    above; returns (B, H, Tq, hs).

    A query row with no visible key (a left pad under the causal mask) sees every key, as in
    the PyTorch twin. Such rows are padding: real tokens get the result of the function above.
    """
    if mask is not None:
        mask = mask | ~tf.reduce_any(mask, -1, keepdims=True)
    # The scale as a tensor of the logits' dtype (float32, or float64 for float64 inputs): Keras
    # would turn a Python float into float32 first, 2e-8 relative error in a float64 model.
    scale = tf.constant(1.0 / math.sqrt(q.shape[-1]), tf.float64 if q.dtype == tf.float64 else tf.float32)
    q, k, v = (tf.transpose(x, [0, 2, 1, 3]) for x in (q, k, v))            # (B, T, H, hs): Keras' layout
    context = keras.ops.dot_product_attention(q, k, v, mask=mask, scale=scale)
    return tf.transpose(context, [0, 2, 1, 3])                              # (B, H, Tq, hs)


def causal_inputs(input_ids, attention_mask, position_ids, cache, cache_index):
    """A decoder's defaults, as `Backbone` sets them: positions cache_index .. cache_index+T-1,
    every key real, and the boolean causal mask (B, 1, T, Tk) unless a prebuilt one is given.
    Returns (position_ids (B, T), mask)."""
    B, T = tf.shape(input_ids)[0], tf.shape(input_ids)[1]
    if position_ids is None:
        position_ids = tf.broadcast_to(tf.range(cache_index, cache_index + T)[None, :], [B, T])
    if attention_mask is None:
        key_length = cache[0][0].shape[2] if cache is not None else T
        attention_mask = tf.ones([B, key_length], dtype=tf.int32)
    attention_mask = tf.convert_to_tensor(attention_mask)
    if attention_mask.shape.rank == 4:
        return position_ids, tf.cast(attention_mask, tf.bool)
    return position_ids, build_attention_mask(attention_mask, True, T, cache_index if cache is not None else None)


# ----------------------------------------------------------------------------- layers

class Embeddings(keras.layers.Layer):
    """word + position + token-type embeddings, then LayerNorm and dropout."""

    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.pad_token_id = config.pad_token_id
        self.word_embeddings = embedding(config.vocab_size, "word_embeddings", config, dtype,
                                         padding_idx=config.pad_token_id)
        self.position_embeddings = embedding(config.max_position_embeddings, "position_embeddings", config, dtype)
        self.token_type_embeddings = embedding(config.type_vocab_size, "token_type_embeddings", config, dtype)
        self.LayerNorm = layer_norm(config, dtype)
        self.dropout = keras.layers.Dropout(config.hidden_dropout_prob, name="dropout", dtype=dtype)

    def build(self, input_shape=None):
        for layer in (self.word_embeddings, self.position_embeddings, self.token_type_embeddings):
            layer.build((None, None))
        self.LayerNorm.build((None, None, self.word_embeddings.output_dim))
        self.built = True

    def call(self, input_ids, position_ids, token_type_ids, training=False):
        inputs_embeds = self.word_embeddings(input_ids)                     # (B, T, C)
        # torch's padding_idx also stops the lookup's gradient into the [PAD] row; so here.
        is_pad = (input_ids == self.pad_token_id)[..., None]
        inputs_embeds = tf.where(is_pad, tf.stop_gradient(inputs_embeds), inputs_embeds)
        x = (inputs_embeds
             + self.position_embeddings(position_ids)
             + self.token_type_embeddings(token_type_ids))
        return self.dropout(self.LayerNorm(x), training=training)


class SelfAttention(keras.layers.Layer):
    """Multi-head attention: Concat(head_1, ..., head_h), head_i = Attention(X W_i^Q, X W_i^K, X W_i^V).

    The output projection W^O is `Attention.output.dense` (BERT keeps it in the next module).
    """

    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.head_size
        self.query = dense(config.hidden_size, "query", config, dtype)
        self.key = dense(config.hidden_size, "key", config, dtype)
        self.value = dense(config.hidden_size, "value", config, dtype)
        self.dropout = keras.layers.Dropout(config.attention_probs_dropout_prob, name="dropout",
                                            dtype=dtype)
        self.attn_implementation = config.attn_implementation  # "sdpa" (fused) or "eager"

    def split_heads(self, x):
        B, T = tf.shape(x)[0], tf.shape(x)[1]
        x = tf.reshape(x, [B, T, self.num_attention_heads, self.attention_head_size])  # (B, T, H, hs)
        return tf.transpose(x, [0, 2, 1, 3])                                # (B, H, T, hs)

    def call(self, hidden_states, mask, cache=None, cache_index=0, output_attentions=False, training=False):
        """Returns (context (B, T, C), weights (B, H, Tq, Tk) or None, (k, v)).

        The fused op runs unless the config says "eager", the caller asks for the weights, or
        attention dropout is on (keras.ops.dot_product_attention has none).
        """
        q = self.split_heads(self.query(hidden_states))                     # (B, H, Tq, hs)
        k = self.split_heads(self.key(hidden_states))                       # (B, H, Tq, hs)
        v = self.split_heads(self.value(hidden_states))                     # (B, H, Tq, hs)
        if cache is not None:  # attend over every cached position; the mask hides unwritten ones
            k = write_cache(cache[0], k, cache_index)                       # (B, H, Tk, hs)
            v = write_cache(cache[1], v, cache_index)                       # (B, H, Tk, hs)
        dropout_on = training and self.dropout.rate > 0
        if self.attn_implementation == "sdpa" and not output_attentions and not dropout_on:
            context, weights = fused_attention(q, k, v, mask), None         # (B, H, Tq, hs)
        else:
            context, weights = scaled_dot_product_attention(q, k, v, mask, self.dropout, training)
        B, T = tf.shape(context)[0], tf.shape(context)[2]
        context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]),
                             [B, T, self.num_attention_heads * self.attention_head_size])  # (B, T, C)
        return context, weights, (k, v)


class Output(keras.layers.Layer):
    """The end of a sub-layer: a projection back to width C, dropout, residual connection and
    LayerNorm (post-LN). After attention it is W^O (Hugging Face's `BertSelfOutput`), after the
    feed-forward layer W_2 (`BertOutput`): one class, the same names. Keras' Dense takes its input
    width at the first call, so there is no input_size argument here."""

    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.dense = dense(config.hidden_size, "dense", config, dtype)
        self.LayerNorm = layer_norm(config, dtype)
        self.dropout = keras.layers.Dropout(config.hidden_dropout_prob, name="dropout", dtype=dtype)

    def call(self, hidden_states, input_tensor, training=False):
        return self.LayerNorm(self.dropout(self.dense(hidden_states), training=training) + input_tensor)


class Attention(keras.layers.Layer):
    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.self = SelfAttention(config, name="self", dtype=dtype)
        self.output_ = Output(config, name="output", dtype=dtype)  # `output` is taken in Keras

    def call(self, hidden_states, mask, cache=None, cache_index=0, output_attentions=False, training=False):
        context, weights, present = self.self(hidden_states, mask, cache=cache, cache_index=cache_index,
                                              output_attentions=output_attentions, training=training)
        return self.output_(context, hidden_states, training=training), weights, present


class Intermediate(keras.layers.Layer):
    """First feed-forward layer: GELU(x W_1 + b_1)."""

    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.dense = dense(config.intermediate_size, "dense", config, self.dtype_policy)

    def call(self, hidden_states):
        return gelu(self.dense(hidden_states))    # (B, T, I)


class TransformerBlock(keras.layers.Layer):
    """One post-LN encoder layer: attention sub-layer, then feed-forward sub-layer."""

    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.attention = Attention(config, name="attention", dtype=dtype)
        self.intermediate = Intermediate(config, name="intermediate", dtype=dtype)
        self.output_ = Output(config, name="output", dtype=dtype)

    def call(self, hidden_states, mask, cache=None, cache_index=0, output_attentions=False, training=False):
        attention_output, weights, present = self.attention(hidden_states, mask, cache=cache, cache_index=cache_index,
                                                            output_attentions=output_attentions,
                                                            training=training)
        layer_output = self.output_(self.intermediate(attention_output), attention_output,
                                    training=training)
        return layer_output, weights, present


class Encoder(keras.layers.Layer):
    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        # Named "layer.i" so the variable path reads as the Hugging Face name `encoder.layer.i`.
        self.layer = [TransformerBlock(config, name=f"layer.{i}", dtype=self.dtype_policy)
                      for i in range(config.num_hidden_layers)]

    def call(self, hidden_states, mask, cache=None, cache_index=0, output_attentions=False, training=False):
        presents, attentions = [], []
        for i, block in enumerate(self.layer):
            layer_cache = cache[i] if cache is not None else None
            hidden_states, weights, present = block(hidden_states, mask, cache=layer_cache, cache_index=cache_index,
                                                    output_attentions=output_attentions, training=training)
            presents.append(present)
            attentions.append(weights)
        return hidden_states, presents, attentions


class Backbone(keras.layers.Layer):
    """Embeddings and the encoder stack (Hugging Face's `BertModel` without the pooler)."""

    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.config = config
        self.embeddings = Embeddings(config, name="embeddings", dtype=dtype)
        self.encoder = Encoder(config, name="encoder", dtype=dtype)

    def call(self, input_ids, attention_mask=None, position_ids=None, token_type_ids=None,
             cache=None, cache_index=0, output_attentions=False, training=False):
        """Returns (hidden_states (B, T, C), presents, attentions).

        attention_mask: (B, Tk) with 1 on real tokens, or a prebuilt boolean (B, 1, T, Tk)
        mask from `shared.data.build_attention_mask`; None means every token is real.
        With a cache (a (key, value) pair of (B, H, Tmax, hs) per layer, from `init_cache`),
        the T new tokens sit at positions cache_index .. cache_index+T-1 and attention_mask
        covers all Tmax positions (0 on padding and on positions not written yet).
        output_attentions: run the written-out attention and return each layer's weights
        (B, H, T, Tk) in `attentions` (else the config's kernel, and None where it is fused).
        """
        input_ids = tf.convert_to_tensor(input_ids)
        B, T = tf.shape(input_ids)[0], tf.shape(input_ids)[1]
        if position_ids is None:
            position_ids = tf.range(cache_index, cache_index + T)[None, :]
            position_ids = tf.broadcast_to(position_ids, [B, T])            # (B, T)
        if token_type_ids is None:
            token_type_ids = tf.zeros_like(input_ids)                       # (B, T)
        if attention_mask is None:
            key_length = cache[0][0].shape[2] if cache is not None else T
            attention_mask = tf.ones([B, key_length], dtype=tf.int32)
        attention_mask = tf.convert_to_tensor(attention_mask)
        if attention_mask.shape.rank == 2:
            offset = cache_index if cache is not None else None
            mask = build_attention_mask(attention_mask, self.config.is_causal, T, offset)  # (B, 1, T, Tk)
        else:
            mask = tf.cast(attention_mask, tf.bool)
        hidden_states = self.embeddings(input_ids, position_ids=position_ids, token_type_ids=token_type_ids,
                                        training=training)
        return self.encoder(hidden_states, mask, cache=cache, cache_index=cache_index,
                            output_attentions=output_attentions, training=training)

    def init_cache(self, batch_size: int, max_length: int):
        """An empty fixed-size key/value cache: per layer a (key, value) pair of zeros."""
        config = self.config
        dtype = self.compute_dtype  # the keys and values' dtype: bfloat16 under mixed precision
        shape = (batch_size, config.num_attention_heads, max_length, config.head_size)  # (B, H, Tmax, hs)

        def zeros():
            return tf.zeros(shape, dtype)
        return [(zeros(), zeros()) for _ in range(config.num_hidden_layers)]


class PredictionHeadTransform(keras.layers.Layer):
    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.dense = dense(config.hidden_size, "dense", config, dtype)
        self.LayerNorm = layer_norm(config, dtype)

    def call(self, hidden_states):
        return self.LayerNorm(gelu(self.dense(hidden_states)))  # (B, T, C)


class LMPredictionHead(keras.layers.Layer):
    """transform, then logits = h E^T + b with E the word-embedding matrix (tied weights).

    Tied at construction, as Hugging Face's TF BERT was: the head holds the embedding layer and
    multiplies by its matrix, so no `decoder` weight (and no duplicate of E) exists here. PyTorch
    ties by making `decoder.weight` the embedding's Parameter.
    """

    def __init__(self, config: ModelConfig, word_embeddings: keras.layers.Embedding, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = config.vocab_size
        self.transform = PredictionHeadTransform(config, name="transform", dtype=self.dtype_policy)
        self.word_embeddings = word_embeddings  # a layer of `bert`: Keras counts its weight once

    def build(self, input_shape=None):
        self.bias = self.add_weight(shape=(self.vocab_size,), initializer="zeros", name="bias")
        self.built = True

    def call(self, hidden_states):
        hidden_states = self.transform(hidden_states)                       # (B, T, C)
        return _tied_logits(hidden_states, self.word_embeddings.embeddings) + self.bias  # (B, T, V)


class LMHead(keras.layers.Layer):
    """The MLM / LM head (`cls` in Hugging Face names: `cls.predictions.*`)."""

    def __init__(self, config: ModelConfig, word_embeddings: keras.layers.Embedding, **kwargs):
        super().__init__(**kwargs)
        self.predictions = LMPredictionHead(config, word_embeddings, name="predictions", dtype=self.dtype_policy)

    def call(self, hidden_states):
        return self.predictions(hidden_states)


def _tied_logits(hidden_states, embeddings):
    """h E^T for h (..., C) and the embedding matrix E (V, C), as one 2-D product (N, C) x (C, V) over
    the N = prod(...) rows. (tf.matmul of a (B, T, C) and a (V, C) operand is a batched product that
    broadcasts E, and its gradient for E adds up B products: 7 % of a GPT-2 train step under XLA.)"""
    flat = tf.reshape(hidden_states, [-1, tf.shape(hidden_states)[-1]])   # (N, C)
    logits = tf.matmul(flat, embeddings, transpose_b=True)                 # (N, V)
    return tf.reshape(logits, tf.concat([tf.shape(hidden_states)[:-1], tf.shape(embeddings)[:1]], 0))


class TiedLMHead(keras.layers.Layer):
    """logits = h E^T, E the token-embedding matrix: the decoders' tied `lm_head` (no bias).

    PyTorch ties a bias-free Linear by making its weight the embedding's Parameter; here, as in
    `LMPredictionHead`, the head holds the embedding layer and has no weight of its own, so
    `lm_head.weight` exists in neither the variables nor the files (`transformers` does not store it).
    """

    def __init__(self, word_embeddings: keras.layers.Embedding, **kwargs):
        super().__init__(**kwargs)
        self.word_embeddings = word_embeddings  # a layer of the backbone: Keras counts its weight once

    def call(self, hidden_states):
        return _tied_logits(hidden_states, self.word_embeddings.embeddings)  # (B, T, V)


class ScalarHead(keras.layers.Layer):
    """A scalar per position: the PPO value head or the reward head. Zero-initialised."""

    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.dense = dense(1, "dense", config, self.dtype_policy, zero=True)

    def call(self, hidden_states):
        return tf.squeeze(self.dense(hidden_states), -1)                    # (B, T)


def decoder_lm_head(config, word_embeddings: keras.layers.Embedding, dtype) -> keras.layers.Layer:
    """A decoder's `lm_head` (no bias): tied, a `TiedLMHead` holding the token table; untied, a
    Dense of its own, kernel N(0, initializer_range) (`lm_head.weight`)."""
    if config.tie_word_embeddings:
        return TiedLMHead(word_embeddings, name="lm_head", dtype=dtype)
    return keras.layers.Dense(config.vocab_size, use_bias=False, name="lm_head", dtype=dtype,
                              kernel_initializer=_normal(config))


# ----------------------------------------------------------------------------- models

class LanguageModel(keras.Model):
    """What every architecture's LM does with its backbone and LM head; a subclass builds the two.

    `backbone(input_ids, attention_mask, position_ids, cache=..., cache_index=...,
    output_attentions=..., training=...)` returns (hidden_states (B, T, C), presents, attentions);
    `lm_head` maps hidden states to logits. BERT's are `bert` and `cls`; GPT-2's `transformer` and
    `lm_head`; Llama's `model` and `lm_head` -- each under its Hugging Face name, which is also its
    Keras layer name (so the variable paths read as the Hugging Face names).
    `model(input_ids, attention_mask=None, position_ids=None, training=False)` returns the logits
    (B, T, V); the LM loss is PyTorch's (SFT trains there).
    """

    def build_weights(self):
        """Create every variable now (Keras would wait for the first call)."""
        ids = tf.zeros([1, 1], tf.int32)
        hidden_states, _, _ = self.backbone(ids)
        self.lm_head(hidden_states)
        if self.value_head is not None:
            self.value_head(hidden_states)

    def call(self, input_ids, attention_mask=None, position_ids=None, training=False):
        hidden_states, _, _ = self.backbone(input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                            training=training)
        return self.lm_head(hidden_states)                                  # (B, T, V)

    def labelled_logits(self, hidden_states, labels):
        """Sparse prediction: the LM head (the costliest layer at a large vocabulary) on the
        positions that carry a label only -- the masked tokens of MLM, the completion of the
        completion-only loss. Causal: position t is scored against label t + 1.
        Returns (logits (N, V), targets (N,)), N the number of labels."""
        if self.config.is_causal:
            hidden_states, labels = shift_for_next_token(hidden_states, labels)  # (B, T-1, C), (B, T-1)
        keep = labels != IGNORE_INDEX                                       # (B, T')
        return self.lm_head(tf.boolean_mask(hidden_states, keep)), tf.boolean_mask(labels, keep)  # (N, V), (N,)

    def forward_with_cache(self, input_ids, attention_mask, cache, cache_index, position_ids=None):
        """Logits of T new tokens written into the cache at cache_index.

        Returns (logits (B, T, V), new cache, hidden_states (B, T, C)).
        """
        hidden_states, presents, _ = self.backbone(input_ids, attention_mask=attention_mask,
                                                   position_ids=position_ids, cache=cache,
                                                   cache_index=cache_index)
        return self.lm_head(hidden_states), presents, hidden_states

    def values(self, input_ids, attention_mask=None, training=False):
        """Value-head output per position (B, T); needs `with_value_head=True`."""
        hidden_states, _, _ = self.backbone(input_ids, attention_mask=attention_mask, training=training)
        return self.value_head(hidden_states)

    def logits_and_values(self, input_ids, attention_mask=None, position_ids=None, training=False):
        """One pass for PPO: logits (B, T, V) and value-head output (B, T)."""
        hidden_states, _, _ = self.backbone(input_ids, attention_mask=attention_mask,
                                            position_ids=position_ids, training=training)
        return self.lm_head(hidden_states), self.value_head(hidden_states)


class PolicyModel(LanguageModel):
    """Backbone + tied LM head (+ optional value head): the Keras twin of `SFTModel`."""

    def __init__(self, config: ModelConfig, with_value_head: bool = False, dtype=None, **kwargs):
        super().__init__(dtype=dtype, **kwargs)
        self.config = config
        self.bert = Backbone(config, name="bert", dtype=dtype)
        self.cls = LMHead(config, self.bert.embeddings.word_embeddings, name="cls", dtype=dtype)
        self.value_head = ScalarHead(config, name="value_head", dtype=dtype) if with_value_head else None
        self.build_weights()

    @property
    def backbone(self) -> Backbone:
        return self.bert

    @property
    def lm_head(self) -> LMHead:
        return self.cls


def at_least_float32(x):
    """The loss of bfloat16 logits is computed in float32; float32 and float64 stay."""
    return x if x.dtype in (tf.float32, tf.float64) else tf.cast(x, tf.float32)


def lm_loss(logits, labels, causal: bool):
    """Mean cross-entropy over labelled positions (labels == IGNORE_INDEX are skipped).

    causal: position t predicts token t + 1 (the shift of `BertLMHeadModel`).
    """
    return completion_only_loss(logits, labels) if causal else cross_entropy(logits, labels)
