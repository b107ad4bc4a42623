"""The BERT-style model family in PyTorch. Mirrored name for name by `tf_impl/model.py`.

Attribute names are Hugging Face BERT's, so `SFTModel(config).state_dict()` loads into
`transformers.BertForMaskedLM` / `BertLMHeadModel` with `strict=True`, and the other way round.
Post-LayerNorm blocks, as in the original Transformer and BERT:

    x = LayerNorm(x + Dropout(SelfAttention(x)))
    x = LayerNorm(x + Dropout(W_2 GELU(W_1 x)))

Train/eval mode is the module's (`.train()` / `.eval()`), where Keras passes `training` down.
Each layer is initialised where it is built (`dense`, `embedding`, `layer_norm` below), as in
the Keras file; `config.attn_implementation` picks the fused attention kernel or the written-out one.

Shape legend (the same in both files):
    B batch, T time (= Tq query length), Tk key length, Tmax cache length, C hidden size, H heads,
    hs head size (C / H), V vocabulary, I intermediate (feed-forward) size.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.config import ModelConfig
from shared.constants import ATTENTION_MASK_FILL, IGNORE_INDEX
from torch_impl.losses import completion_only_loss, cross_entropy, masked_mean, shift_for_next_token, token_nll


# ----------------------------------------------------------------------------- initialisation

def dense(in_features: int, out_features: int, config: ModelConfig, zero: bool = False) -> nn.Linear:
    """A Linear layer with BERT's init: weight N(0, initializer_range), bias 0.

    zero: weight 0 too (the scalar heads: the first value or reward estimate is 0 for every input).
    """
    layer = nn.Linear(in_features, out_features)
    with torch.no_grad():
        if zero:
            layer.weight.zero_()
        else:
            layer.weight.normal_(0.0, config.initializer_range)
        layer.bias.zero_()
    return layer


def embedding(num_embeddings: int, config: ModelConfig, padding_idx=None) -> nn.Embedding:
    """An embedding table N(0, initializer_range); the padding_idx row ([PAD]) is 0."""
    layer = nn.Embedding(num_embeddings, config.hidden_size, padding_idx=padding_idx)
    with torch.no_grad():
        layer.weight.normal_(0.0, config.initializer_range)
        if padding_idx is not None:
            layer.weight[padding_idx].zero_()
    return layer


def layer_norm(config: ModelConfig) -> nn.LayerNorm:
    """LayerNorm over the hidden size: scale 1, shift 0 (torch's default init)."""
    return nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


def gelu(x):
    """GELU(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))), the exact (erf) form BERT uses.

    torch's fused kernel computes this form (the TF file writes it out; see its note).
    """
    return F.gelu(x)


# ----------------------------------------------------------------------------- masks and attention

def build_attention_mask(attention_mask, causal: bool, query_length=None, query_offset=None):
    """Boolean (B, 1, Tq, Tk) mask, True where query i may attend to key j.

    The torch twin of `shared.data.build_attention_mask` (used when a (B, Tk) padding mask is
    passed instead of the prebuilt 4-D one). Query i sits at key position query_offset + i;
    by default the queries are the last Tq of the Tk positions.
    """
    batch, key_length = attention_mask.shape
    query_length = key_length if query_length is None else query_length
    query_offset = key_length - query_length if query_offset is None else query_offset
    allowed = attention_mask[:, None, None, :].bool()                      # (B, 1, 1, Tk)
    if causal:
        device = attention_mask.device
        query_pos = query_offset + torch.arange(query_length, device=device)[:, None]  # (Tq, 1)
        key_pos = torch.arange(key_length, device=device)[None, :]                     # (1, Tk)
        allowed = allowed & (key_pos <= query_pos)                          # (B, 1, Tq, Tk)
    return allowed.expand(batch, 1, query_length, key_length)              # (B, 1, Tq, Tk)


def write_cache(cache, new, index):
    """Cache (B, H, Tmax, hs) with positions index .. index+T-1 replaced by new (B, H, T, hs).

    A fixed-size cache: shapes never change while decoding (TensorFlow needs that to trace the
    decoding step once; PyTorch uses the same scheme so the two read alike). PyTorch writes the
    T new rows in place, a copy of B*H*T*hs numbers: the cache is a buffer that only `generate`
    owns, and rebuilding all Tmax rows at every step cost 40 % of a GPT-2 decode. (TensorFlow keeps
    the functional version: its tensors are immutable, and its decode runs as one XLA program.)
    """
    cache[:, :, index:index + new.shape[2]] = new
    return cache


def scaled_dot_product_attention(q, k, v, mask=None, dropout=None):
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V.

    q: (B, H, Tq, hs), k and v: (B, H, Tk, hs), mask: bool, broadcastable to (B, H, Tq, Tk),
    True where attending is allowed. Returns (output (B, H, Tq, hs), weights (B, H, Tq, Tk)).
    """
    d_k = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)                      # (B, H, Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, ATTENTION_MASK_FILL)
    weights = F.softmax(scores, dim=-1)                                     # (B, H, Tq, Tk)
    if dropout is not None:
        weights = dropout(weights)
    return weights @ v, weights                                             # (B, H, Tq, hs)


def fused_attention(q, k, v, mask=None, dropout_p=0.0, enable_gqa=False):
    """The same Attention(Q, K, V) by torch's fused kernel, F.scaled_dot_product_attention
    (faster, less memory; it returns no weights). Shapes as above; returns (B, H, Tq, hs).
    enable_gqa: k and v have Hkv heads, H a multiple of Hkv; query head j reads key/value head
    j // (H / Hkv) without the repeated copies (`llama.repeat_kv`) being made.

    A query row with no visible key (a left pad under the causal mask) would give NaN in the
    fused kernel; letting it see every key keeps it finite. Such rows are padding: no real token
    attends to them, so real tokens get the result of the function above.
    """
    if mask is not None:
        mask = mask | ~mask.any(-1, keepdim=True)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, enable_gqa=enable_gqa)


def causal_inputs(input_ids, attention_mask, position_ids, cache, cache_index):
    """A decoder's defaults, as `Backbone` sets them: positions cache_index .. cache_index+T-1,
    every key real, and the boolean causal mask (B, 1, T, Tk) unless a prebuilt one is given.
    Returns (position_ids (B, T), mask)."""
    B, T = input_ids.shape
    if position_ids is None:
        position_ids = torch.arange(cache_index, cache_index + T, device=input_ids.device).expand(B, T)
    if attention_mask is None:
        key_length = cache[0][0].shape[2] if cache is not None else T
        attention_mask = torch.ones(B, key_length, dtype=torch.long, device=input_ids.device)
    if attention_mask.dim() == 4:
        return position_ids, attention_mask.bool()
    return position_ids, build_attention_mask(attention_mask, True, T, cache_index if cache is not None else None)


# ----------------------------------------------------------------------------- layers

class Embeddings(nn.Module):
    """word + position + token-type embeddings, then LayerNorm and dropout."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.word_embeddings = embedding(config.vocab_size, config, padding_idx=config.pad_token_id)
        self.position_embeddings = embedding(config.max_position_embeddings, config)
        self.token_type_embeddings = embedding(config.type_vocab_size, config)
        self.LayerNorm = layer_norm(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, position_ids, token_type_ids):
        x = (self.word_embeddings(input_ids)                                # (B, T, C)
             + self.position_embeddings(position_ids)
             + self.token_type_embeddings(token_type_ids))
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    """Multi-head attention: Concat(head_1, ..., head_h), head_i = Attention(X W_i^Q, X W_i^K, X W_i^V).

    The output projection W^O is `Attention.output.dense` (BERT keeps it in the next module).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.head_size
        self.query = dense(config.hidden_size, config.hidden_size, config)
        self.key = dense(config.hidden_size, config.hidden_size, config)
        self.value = dense(config.hidden_size, config.hidden_size, config)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self.attn_implementation = config.attn_implementation  # "sdpa" (fused) or "eager"

    def split_heads(self, x):
        B, T, _ = x.shape
        x = x.view(B, T, self.num_attention_heads, self.attention_head_size)  # (B, T, H, hs)
        return x.transpose(1, 2)                                            # (B, H, T, hs)

    def forward(self, hidden_states, mask, cache=None, cache_index=0, output_attentions=False):
        """Returns (context (B, T, C), weights (B, H, Tq, Tk) or None, (k, v)).

        The fused kernel runs unless the config says "eager" or the caller asks for the weights.
        """
        q = self.split_heads(self.query(hidden_states))                     # (B, H, Tq, hs)
        k = self.split_heads(self.key(hidden_states))                       # (B, H, Tq, hs)
        v = self.split_heads(self.value(hidden_states))                     # (B, H, Tq, hs)
        if cache is not None:  # attend over every cached position; the mask hides unwritten ones
            k = write_cache(cache[0], k, cache_index)                       # (B, H, Tk, hs)
            v = write_cache(cache[1], v, cache_index)                       # (B, H, Tk, hs)
        if self.attn_implementation == "sdpa" and not output_attentions:
            dropout_p = self.dropout.p if self.training else 0.0
            context, weights = fused_attention(q, k, v, mask, dropout_p), None  # (B, H, Tq, hs)
        else:
            context, weights = scaled_dot_product_attention(q, k, v, mask, self.dropout)
        B, T = context.shape[0], context.shape[2]
        context = context.transpose(1, 2).reshape(B, T,
                                                  self.num_attention_heads * self.attention_head_size)  # (B, T, C)
        return context, weights, (k, v)


class Output(nn.Module):
    """The end of a sub-layer: a projection back to width C, dropout, residual connection and
    LayerNorm (post-LN). After attention it is W^O (input_size C; Hugging Face's `BertSelfOutput`),
    after the feed-forward layer W_2 (input_size I; `BertOutput`): one class, the same names."""

    def __init__(self, config: ModelConfig, input_size: int):
        super().__init__()
        self.dense = dense(input_size, config.hidden_size, config)
        self.LayerNorm = layer_norm(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)  # (B, T, C)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.self = SelfAttention(config)
        self.output = Output(config, config.hidden_size)

    def forward(self, hidden_states, mask, cache=None, cache_index=0, output_attentions=False):
        context, weights, present = self.self(hidden_states, mask, cache=cache, cache_index=cache_index,
                                              output_attentions=output_attentions)
        return self.output(context, hidden_states), weights, present


class Intermediate(nn.Module):
    """First feed-forward layer: GELU(x W_1 + b_1)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dense = dense(config.hidden_size, config.intermediate_size, config)

    def forward(self, hidden_states):
        return gelu(self.dense(hidden_states))                            # (B, T, I)


class TransformerBlock(nn.Module):
    """One post-LN encoder layer: attention sub-layer, then feed-forward sub-layer."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = Output(config, config.intermediate_size)

    def forward(self, hidden_states, mask, cache=None, cache_index=0, output_attentions=False):
        attention_output, weights, present = self.attention(hidden_states, mask, cache=cache, cache_index=cache_index,
                                                            output_attentions=output_attentions)
        layer_output = self.output(self.intermediate(attention_output), attention_output)
        return layer_output, weights, present


class Encoder(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.layer = nn.ModuleList([TransformerBlock(config) for _ in range(config.num_hidden_layers)])

    def forward(self, hidden_states, mask, cache=None, cache_index=0, output_attentions=False):
        presents, attentions = [], []
        for i, block in enumerate(self.layer):
            layer_cache = cache[i] if cache is not None else None
            hidden_states, weights, present = block(hidden_states, mask, cache=layer_cache, cache_index=cache_index,
                                                    output_attentions=output_attentions)
            presents.append(present)
            attentions.append(weights)
        return hidden_states, presents, attentions


class Backbone(nn.Module):
    """Embeddings and the encoder stack (Hugging Face's `BertModel` without the pooler)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)

    def forward(self, input_ids, attention_mask=None, position_ids=None, token_type_ids=None,
                cache=None, cache_index=0, output_attentions=False):
        """Returns (hidden_states (B, T, C), presents, attentions).

        attention_mask: (B, Tk) with 1 on real tokens, or a prebuilt boolean (B, 1, T, Tk)
        mask from `shared.data.build_attention_mask`; None means every token is real.
        With a cache (a (key, value) pair of (B, H, Tmax, hs) per layer, from `init_cache`),
        the T new tokens sit at positions cache_index .. cache_index+T-1 and attention_mask
        covers all Tmax positions (0 on padding and on positions not written yet).
        output_attentions: run the written-out attention and return each layer's weights
        (B, H, T, Tk) in `attentions` (else the config's kernel, and None where it is fused).
        """
        B, T = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(cache_index, cache_index + T, device=input_ids.device)
            position_ids = position_ids.expand(B, T)                        # (B, T)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)                    # (B, T)
        if attention_mask is None:
            key_length = cache[0][0].shape[2] if cache is not None else T
            attention_mask = torch.ones(B, key_length, dtype=torch.long, device=input_ids.device)
        if attention_mask.dim() == 4:
            mask = attention_mask.bool()
        elif not self.config.is_causal and cache is None and bool(attention_mask.all()):
            mask = None  # nothing to hide: the fused kernel runs its faster unmasked path
        else:
            offset = cache_index if cache is not None else None
            mask = build_attention_mask(attention_mask, self.config.is_causal, T, offset)  # (B, 1, T, Tk)
        hidden_states = self.embeddings(input_ids, position_ids=position_ids, token_type_ids=token_type_ids)
        return self.encoder(hidden_states, mask, cache=cache, cache_index=cache_index,
                            output_attentions=output_attentions)

    def init_cache(self, batch_size: int, max_length: int):
        """An empty fixed-size key/value cache: per layer a (key, value) pair of zeros."""
        config = self.config
        dtype = self.embeddings.word_embeddings.weight.dtype
        device = self.embeddings.word_embeddings.weight.device
        shape = (batch_size, config.num_attention_heads, max_length, config.head_size)  # (B, H, Tmax, hs)

        def zeros():
            return torch.zeros(shape, dtype=dtype, device=device)
        return [(zeros(), zeros()) for _ in range(config.num_hidden_layers)]


class PredictionHeadTransform(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dense = dense(config.hidden_size, config.hidden_size, config)
        self.LayerNorm = layer_norm(config)

    def forward(self, hidden_states):
        return self.LayerNorm(gelu(self.dense(hidden_states)))            # (B, T, C)


class LMPredictionHead(nn.Module):
    """transform, then logits = h E^T + b with E the word-embedding matrix (tied weights).

    Tied at construction: `decoder` is Hugging Face's Linear, whose weight is the embedding's
    Parameter itself (one matrix, one gradient) and whose bias is `bias`. The Keras head holds
    the embedding layer and multiplies by its matrix.
    """

    def __init__(self, config: ModelConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = PredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.decoder.weight = word_embeddings.weight                        # (V, C), shared
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias

    def forward(self, hidden_states):
        return self.decoder(self.transform(hidden_states))                  # (B, T, V)


class LMHead(nn.Module):
    """The MLM / LM head (`cls` in Hugging Face names: `cls.predictions.*`)."""

    def __init__(self, config: ModelConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = LMPredictionHead(config, word_embeddings)

    def forward(self, hidden_states):
        return self.predictions(hidden_states)


class ScalarHead(nn.Module):
    """A scalar per position: the PPO value head or the reward head. Zero-initialised."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dense = dense(config.hidden_size, 1, config, zero=True)

    def forward(self, hidden_states):
        return self.dense(hidden_states).squeeze(-1)                         # (B, T)


def decoder_lm_head(config, word_embeddings: nn.Embedding) -> nn.Linear:
    """A decoder's `lm_head` (no bias): tied, its weight is the token table's Parameter itself;
    untied, its own matrix N(0, initializer_range)."""
    lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
    if config.tie_word_embeddings:
        lm_head.weight = word_embeddings.weight                             # (V, C), shared
    else:
        with torch.no_grad():
            lm_head.weight.normal_(0.0, config.initializer_range)
    return lm_head


# ----------------------------------------------------------------------------- models

class LanguageModel(nn.Module):
    """What every architecture's LM does with its backbone and LM head; a subclass builds the two.

    `backbone(input_ids, attention_mask, position_ids, cache=..., cache_index=...,
    output_attentions=...)` returns (hidden_states (B, T, C), presents, attentions); `lm_head`
    maps hidden states to logits. BERT's are `bert` and `cls`; GPT-2's `transformer` and
    `lm_head`; Llama's `model` and `lm_head` -- each under its Hugging Face name.
    forward(input_ids, attention_mask, labels=None) returns the loss when labels are given and
    the logits (B, T, V) otherwise. In causal mode the loss is the next-token loss:
    logits at t are compared with labels at t + 1 (the shift happens here, as in
    `BertLMHeadModel` and `GPT2LMHeadModel`); in bidirectional mode it is the masked-LM loss on
    labelled positions.
    """

    def forward(self, input_ids, attention_mask=None, labels=None, position_ids=None,
                reduction="mean", sparse=True):
        """The logits (B, T, V) without labels; with labels the LM loss over the labelled
        positions, "mean" or "sum" (of the token NLL, in float32 or wider). sparse: the LM head
        runs on the labelled positions only (`labelled_logits`); sparse=False computes every
        position's logits first, as Hugging Face's models do -- the same loss, more work."""
        hidden_states, _, _ = self.backbone(input_ids, attention_mask=attention_mask, position_ids=position_ids)
        if labels is None:
            return self.lm_head(hidden_states)                              # (B, T, V)
        if sparse:
            logits, targets = self.labelled_logits(hidden_states, labels)   # (N, V), (N,)
        else:
            logits, targets = self.lm_head(hidden_states), labels           # (B, T, V), (B, T)
            if self.config.is_causal:
                logits, targets = shift_for_next_token(logits, targets)
        nll = token_nll(at_least_float32(logits), targets)                  # 0 where not labelled
        return nll.sum() if reduction == "sum" else masked_mean(nll, targets != IGNORE_INDEX)

    def labelled_logits(self, hidden_states, labels):
        """Sparse prediction: the LM head (the costliest layer at a large vocabulary) on the
        positions that carry a label only -- the masked tokens of MLM, the completion of the
        completion-only loss. Causal: position t is scored against label t + 1.
        Returns (logits (N, V), targets (N,)), N the number of labels."""
        if self.config.is_causal:
            hidden_states, labels = shift_for_next_token(hidden_states, labels)  # (B, T-1, C), (B, T-1)
        keep = labels != IGNORE_INDEX                                       # (B, T')
        return self.lm_head(hidden_states[keep]), labels[keep]              # (N, V), (N,)

    def forward_with_cache(self, input_ids, attention_mask, cache, cache_index, position_ids=None):
        """Logits of T new tokens written into the cache at cache_index.

        Returns (logits (B, T, V), new cache, hidden_states (B, T, C)).
        """
        hidden_states, presents, _ = self.backbone(input_ids, attention_mask=attention_mask,
                                                   position_ids=position_ids, cache=cache,
                                                   cache_index=cache_index)
        return self.lm_head(hidden_states), presents, hidden_states

    def values(self, input_ids, attention_mask=None):
        """Value-head output per position (B, T); needs `with_value_head=True`."""
        hidden_states, _, _ = self.backbone(input_ids, attention_mask=attention_mask)
        return self.value_head(hidden_states)

    def logits_and_values(self, input_ids, attention_mask=None, position_ids=None):
        """One pass for PPO: logits (B, T, V) and value-head output (B, T)."""
        hidden_states, _, _ = self.backbone(input_ids, attention_mask=attention_mask,
                                            position_ids=position_ids)
        return self.lm_head(hidden_states), self.value_head(hidden_states)


class SFTModel(LanguageModel):
    """Backbone + tied LM head (+ optional value head): `BertForMaskedLM` / `BertLMHeadModel`."""

    def __init__(self, config: ModelConfig, with_value_head: bool = False):
        super().__init__()
        self.config = config
        self.bert = Backbone(config)
        self.cls = LMHead(config, self.bert.embeddings.word_embeddings)
        self.value_head = ScalarHead(config) if with_value_head else None

    @property
    def backbone(self) -> Backbone:
        return self.bert

    @property
    def lm_head(self) -> LMHead:
        return self.cls


def at_least_float32(x):
    """The loss of bfloat16 logits is computed in float32; float32 and float64 stay."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def lm_loss(logits, labels, causal: bool):
    """Mean cross-entropy over labelled positions (labels == IGNORE_INDEX are skipped).

    causal: position t predicts token t + 1 (the shift of `BertLMHeadModel`).
    """
    return completion_only_loss(logits, labels) if causal else cross_entropy(logits, labels)
