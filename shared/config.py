"""Configuration dataclasses: one per concept, one comment per field.

`ModelConfig` uses the field names of Hugging Face BERT's `config.json`, so the file we write is
read by `transformers.BertConfig.from_pretrained` and a BERT `config.json` is read by us.
Every dataclass validates itself on construction and raises `ConfigError` naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from shared.algorithms import ALGORITHMS, RL_ALGORITHMS, Algorithm
from shared.constants import INIT_STD, LAYER_NORM_EPS, LORA_ALPHA, LORA_LR_MULTIPLIER, LOSS_NORMALISATIONS
from shared.errors import ConfigError
from shared.io import atomic_write_text

ATTENTION_TYPES = ("bidirectional", "causal")
# Hugging Face's names: "sdpa" runs torch's F.scaled_dot_product_attention / Keras'
# keras.ops.dot_product_attention; "eager" the line-by-line function (which also returns the weights).
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
HIDDEN_ACTS = ("gelu",)  # the erf form, as BERT and torch.nn.functional.gelu

# Keys a transformers-written BERT config.json may carry that do not change our model.
_HF_BOOKKEEPING_KEYS = {
    "model_type", "architectures", "transformers_version", "torch_dtype", "dtype", "use_cache",
    "classifier_dropout", "gradient_checkpointing", "bos_token_id", "eos_token_id",
    "tie_word_embeddings", "is_decoder", "add_cross_attention", "position_embedding_type",
    "chunk_size_feed_forward", "output_attentions", "output_hidden_states", "return_dict",
    "id2label", "label2id", "problem_type", "tokenizer_class", "directionality",
    "pooler_fc_size", "pooler_num_attention_heads", "pooler_num_fc_layers", "pooler_size_per_head",
    "pooler_type", "_name_or_path",
}


# ----------------------------------------------------------------------------- validation helpers

def _check(ok: bool, name: str, problem: str) -> None:
    if not ok:
        raise ConfigError(name, problem)


def _int(cfg, name: str, minimum: int = 1) -> None:
    value = getattr(cfg, name)
    _check(isinstance(value, int) and not isinstance(value, bool), name,
           f"must be an integer, got {value!r}")
    _check(value >= minimum, name, f"must be >= {minimum}, got {value}")


def _float(cfg, name: str, low: float = 0.0, high: float = math.inf,
           low_open: bool = False, high_open: bool = False) -> None:
    value = getattr(cfg, name)
    _check(isinstance(value, (int, float)) and not isinstance(value, bool), name,
           f"must be a number, got {value!r}")
    _check(math.isfinite(value), name, f"must be finite, got {value}")
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    _check(above and below, name, f"must be in {lo}{low}, {high}{hi}, got {value}")


def _choice(cfg, name: str, choices) -> None:
    value = getattr(cfg, name)
    _check(value in choices, name, f"must be one of {', '.join(map(str, choices))}; got {value!r}")


def _resolve_lr(cfg) -> None:
    """An unset learning rate (None) becomes the config's full fine-tuning one, times
    LORA_LR_MULTIPLIER when LoRA adapters train (lora_rank > 0): LoRA's best learning rate is a
    multiple of full fine-tuning's (Biderman et al. 2024; Schulman et al. 2025; shared/constants.py
    says why 3x here). The resolved value is the one a run records (trainer_state.json's config)."""
    if cfg.lr is None:
        cfg.lr = float(f"{cfg.full_fine_tuning_lr * (LORA_LR_MULTIPLIER if cfg.lora_rank else 1.0):.12g}")


def _lora_embeddings(cfg) -> None:
    """--lora-embeddings adds to the adapters: without them (lora_rank 0) every weight trains already."""
    _check(isinstance(cfg.lora_embeddings, bool), "lora_embeddings",
           f"must be true or false, got {cfg.lora_embeddings!r}")
    _check(not cfg.lora_embeddings or cfg.lora_rank > 0, "lora_embeddings",
           "needs --lora-rank > 0 (it trains the embeddings beside the LoRA adapters; without "
           "--lora-rank every weight trains)")


class _Config:
    """JSON round trip shared by every config dataclass."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def _prepare(cls, values: dict, path) -> dict:
        """Hook: turn a foreign dict into our field names (identity by default)."""
        return values

    @classmethod
    def from_dict(cls, values: dict, path=None):
        if not isinstance(values, dict):
            raise ConfigError("(file)", "expected a JSON object", path)
        values = cls._prepare(dict(values), path)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown field (known: {', '.join(sorted(known))})", path)
        try:
            return cls(**values)
        except ConfigError as e:
            raise ConfigError(e.field, e.problem, path) from None

    def to_json_file(self, path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_json_file(cls, path):
        return cls.from_dict(_read_json(path), path=path)


def _read_json(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError("(file)", "no such file", path)
    if path.is_dir():
        raise ConfigError("(file)", "is a directory, expected a JSON file", path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError("(file)", f"not UTF-8 text ({e.reason} at byte {e.start})", path) from None
    except json.JSONDecodeError as e:
        raise ConfigError("(file)", f"invalid JSON at line {e.lineno}: {e.msg}", path) from None


# ----------------------------------------------------------------------------- model

@dataclass
class ModelConfig(_Config):
    """A BERT-style post-LayerNorm transformer. Field names are BERT `config.json` names."""

    vocab_size: int = 512                 # V: rows of the word-embedding matrix (= tokenizer size)
    hidden_size: int = 128                # C: width of every token vector
    num_hidden_layers: int = 2            # N: transformer blocks in the encoder stack
    num_attention_heads: int = 4          # H: heads per attention layer; hs = C / H
    intermediate_size: int = 512          # width of the feed-forward layer (BERT uses 4 * C)
    max_position_embeddings: int = 128    # longest sequence the position table covers
    type_vocab_size: int = 2              # token-type (segment) embeddings, as BERT
    hidden_dropout_prob: float = 0.1      # dropout on embeddings and on each residual branch
    attention_probs_dropout_prob: float = 0.1  # dropout on the attention weights
    layer_norm_eps: float = LAYER_NORM_EPS  # epsilon inside every LayerNorm
    initializer_range: float = INIT_STD   # std of the normal init of weight matrices
    hidden_act: str = "gelu"              # feed-forward activation (erf GELU)
    pad_token_id: int = 0                 # id of [PAD]; its embedding row starts at zero
    attention_type: str = "bidirectional"  # "bidirectional" (MLM) or "causal" (generation)
    attn_implementation: str = "sdpa"     # "sdpa": a fused attention kernel; "eager": written out

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            _int(self, name)
        _check(self.hidden_size % self.num_attention_heads == 0, "num_attention_heads",
               f"must divide hidden_size ({self.hidden_size} is not divisible by "
               f"{self.num_attention_heads})")
        _float(self, "hidden_dropout_prob", 0.0, 1.0, high_open=True)
        _float(self, "attention_probs_dropout_prob", 0.0, 1.0, high_open=True)
        _float(self, "layer_norm_eps", 0.0, 1.0, low_open=True)
        _float(self, "initializer_range", 0.0, 10.0, low_open=True)
        _choice(self, "hidden_act", HIDDEN_ACTS)
        _int(self, "pad_token_id", minimum=0)
        _check(self.pad_token_id < self.vocab_size, "pad_token_id",
               f"must be < vocab_size ({self.vocab_size}), got {self.pad_token_id}")
        _choice(self, "attention_type", ATTENTION_TYPES)
        _choice(self, "attn_implementation", ATTN_IMPLEMENTATIONS)

    model_type = "bert"  # config.json's name of the architecture (a class attribute, not a field)

    @property
    def is_causal(self) -> bool:
        return self.attention_type == "causal"

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_key_value_heads(self) -> int:
        return self.num_attention_heads

    def to_dict(self) -> dict:
        """Our fields plus the keys `transformers` needs to pick the right BERT class."""
        values = dataclasses.asdict(self)
        values.update(
            model_type="bert",
            architectures=["BertLMHeadModel" if self.is_causal else "BertForMaskedLM"],
            is_decoder=self.is_causal,
            position_embedding_type="absolute",
            tie_word_embeddings=True,
        )
        return values

    @classmethod
    def _prepare(cls, values: dict, path) -> dict:
        """Accept a Hugging Face BERT config as well as our own.

        A dict with `model_type` was written by `transformers` (or by us): its bookkeeping keys
        are checked where they change the model and otherwise dropped. Without `model_type`,
        every key must be a field of ours, so a typo is an error rather than a silent default.
        """
        if "model_type" not in values:
            return values
        if values["model_type"] != "bert":
            raise ConfigError("model_type", f"must be 'bert', got {values['model_type']!r}", path)
        if values.get("position_embedding_type", "absolute") != "absolute":
            raise ConfigError("position_embedding_type", "only 'absolute' is supported", path)
        if values.get("add_cross_attention", False):
            raise ConfigError("add_cross_attention", "cross-attention is not supported", path)
        if "attention_type" not in values:
            values["attention_type"] = "causal" if values.get("is_decoder") else "bidirectional"
        if values.get("pad_token_id") is None:
            values.pop("pad_token_id", None)
        if values.get("attn_implementation") not in ATTN_IMPLEMENTATIONS:  # e.g. "flash_attention_2": a kernel
            values.pop("attn_implementation", None)                          # choice, not a model property
        return {k: v for k, v in values.items() if k not in _HF_BOOKKEEPING_KEYS}


# ----------------------------------------------------------------------------- training and eval

@dataclass
class SFTConfig(_Config):
    """Supervised fine-tuning (PyTorch)."""

    full_fine_tuning_lr: ClassVar[float] = 1e-3  # lr when unset, without LoRA

    objective: str = "clm"                # clm: causal next-token loss (completion-only on sft records); mlm: masked LM
    steps: int = 600                      # optimizer steps (ignored when epochs is set)
    epochs: float | None = None           # passes over the training data, instead of steps
    batch_size: int = 32                  # sequences per optimizer step
    lr: float | None = None               # peak AdamW learning rate; unset: 1e-3, or 3x that (3e-3) with
                                          # --lora-rank (LoRA's best learning rate is a multiple of full FT's)
    weight_decay: float = 0.01            # AdamW decoupled weight decay (not on biases/LayerNorm)
    warmup_steps: int = 30                # linear warm-up from 0 to lr, then linear decay to 0
    max_grad_norm: float = 1.0            # global gradient-norm clip; 0 turns clipping off
    max_length: int = 64                  # longest tokenized example; longer prompts are cut left
    mlm_probability: float = 0.15         # mlm: share of the real, non-special tokens chosen for the loss,
                                          # each then [MASK]ed 80%, replaced 10%, kept 10%
    eval_every: int = 50                  # steps between held-out evaluations
    early_stopping_patience: int = 0      # evaluations without improvement before stopping; 0 = off
    save_every: int = 0                   # steps between checkpoints; 0 = only at the end
    keep_checkpoints: int = 2             # how many step-N checkpoints to keep
    lora_rank: int = 0                    # train only LoRA adapters of this rank, on every linear layer of
                                          # every block (attention and feed-forward); 16 is a good start;
                                          # 0 = full fine-tune
    lora_alpha: float = LORA_ALPHA        # LoRA scaling numerator (scale = alpha / rank)
    lora_embeddings: bool = False         # with --lora-rank: also train the embedding layer(s) in full (and an
                                          # untied LM head), as peft's modules_to_save: in a small model the
                                          # frozen embeddings can be what holds LoRA back
    seed: int = 0                         # seeds data order, masking, dropout and init

    def __post_init__(self):
        _resolve_lr(self)
        _choice(self, "objective", ("clm", "mlm"))
        _int(self, "steps")
        if self.epochs is not None:
            _float(self, "epochs", 0.0, low_open=True)
        _int(self, "batch_size")
        _float(self, "lr", 0.0, low_open=True)
        _float(self, "weight_decay", 0.0)
        _int(self, "warmup_steps", minimum=0)
        _float(self, "max_grad_norm", 0.0)
        _int(self, "max_length", minimum=4)
        _float(self, "mlm_probability", 0.0, 1.0, low_open=True)
        _int(self, "eval_every")
        _int(self, "early_stopping_patience", minimum=0)
        _int(self, "save_every", minimum=0)
        _int(self, "keep_checkpoints")
        _int(self, "lora_rank", minimum=0)
        _float(self, "lora_alpha", 0.0, low_open=True)
        _lora_embeddings(self)
        _int(self, "seed", minimum=0)


@dataclass
class DPOConfig(SFTConfig):
    """Direct preference optimisation (PyTorch): SFT's optimizer, schedule and checkpoints, on
    preference pairs, against the frozen SFT model."""

    full_fine_tuning_lr: ClassVar[float] = 1e-4  # lr when unset, without LoRA

    steps: int = 300                      # optimizer steps (ignored when epochs is set)
    batch_size: int = 32                  # pairs per optimizer step
    lr: float | None = None               # peak AdamW learning rate; unset: 1e-4, or 3x that (3e-4) with
                                          # --lora-rank
    warmup_steps: int = 10                # linear warm-up from 0 to lr, then linear decay to 0
    beta: float = 0.1                     # inverse temperature of the implicit reward beta log(pi / ref)

    def __post_init__(self):
        super().__post_init__()
        _check(self.objective == "clm", "objective", f"DPO scores completions of a causal model, got {self.objective!r}")
        _float(self, "beta", 0.0, low_open=True)


@dataclass
class PPOConfig(_Config):
    """RL with a KL penalty to the frozen SFT model (TensorFlow): PPO and its relatives."""

    full_fine_tuning_lr: ClassVar[float] = 1e-4  # lr when unset, without LoRA

    algorithm: str = "ppo"                # ppo | grpo | rloo | reinforce (docs/guide.md compares them)
    iterations: int = 120                 # rollout-then-update rounds
    batch_size: int = 64                  # completions per rollout (grpo, rloo: of batch size / group size prompts)
    group_size: int = 4                   # grpo, rloo: completions sampled per prompt, >= 2
    loss_normalisation: str = "sequence"  # grpo: sequence = mean over each completion's tokens, then over
                                          # completions (the GRPO paper); token = over all tokens of the minibatch
                                          # (DAPO)
    baseline_decay: float = 0.9           # reinforce: baseline b <- decay b + (1 - decay) mean reward per rollout
    minibatch_size: int = 16              # ppo, grpo: sequences per gradient step (the others: the whole rollout)
    ppo_epochs: int = 4                   # ppo, grpo: passes over each rollout
    lr: float | None = None               # Adam learning rate of policy and value head; unset: 1e-4, or 3x
                                          # that (3e-4) with --lora-rank (as for SFT)
    max_new_tokens: int = 16              # longest completion sampled per prompt
    temperature: float = 1.0              # sampling temperature, also applied to the log-probs
    top_k: int = 0                        # sample from the k most likely tokens; 0 = all
    gamma: float = 1.0                    # discount factor
    lam: float = 0.95                     # GAE lambda
    clip_range: float = 0.2               # epsilon of the clipped surrogate objective
    clip_range_value: float = 0.2         # clip of the value-function update (PPO2)
    vf_coef: float = 0.1                  # weight of the value loss
    ent_coef: float = 0.0                 # weight of the entropy bonus
    kl_coef: float = 0.05                 # initial per-token KL penalty coefficient beta
    target_kl: float | None = None        # target KL of the adaptive KL controller; unset (None): beta stays fixed
    kl_horizon: int = 10000               # horizon of the adaptive KL controller (in samples)
    whiten_rewards: bool = False          # ppo: normalise per-token rewards before GAE
    whiten_advantages: bool = True        # normalise advantages within each rollout
    max_grad_norm: float = 1.0            # global gradient-norm clip; 0 turns clipping off
    save_every: int = 0                   # iterations between checkpoints; 0 = only at the end
    lora_rank: int = 0                    # train only LoRA adapters of this rank, on every linear layer of
                                          # every block (attention and feed-forward), and with ppo the value
                                          # head; 16 is a good start; 0 = train every weight
    lora_alpha: float = LORA_ALPHA        # LoRA scaling numerator (scale = alpha / rank)
    lora_embeddings: bool = False         # with --lora-rank: also train the embedding layer(s) in full (and an
                                          # untied LM head), as peft's modules_to_save (as for SFT)
    xla: bool = True                      # XLA-compile the traced train, scoring and decoding steps
    seed: int = 0                         # seeds sampling and minibatch order

    def __post_init__(self):
        _resolve_lr(self)
        for name in ("iterations", "batch_size", "minibatch_size", "ppo_epochs", "max_new_tokens",
                     "kl_horizon"):
            _int(self, name)
        _choice(self, "algorithm", RL_ALGORITHMS)
        if self.spec.epochs:  # the others take one step on the whole rollout
            _check(self.minibatch_size <= self.batch_size, "minibatch_size",
                   f"must be <= batch_size ({self.batch_size}), got {self.minibatch_size}")
        _float(self, "lr", 0.0, low_open=True)
        _float(self, "temperature", 0.0, low_open=True)
        _int(self, "top_k", minimum=0)
        _float(self, "gamma", 0.0, 1.0)
        _float(self, "lam", 0.0, 1.0)
        _float(self, "clip_range", 0.0, low_open=True)
        _float(self, "clip_range_value", 0.0, low_open=True)
        _float(self, "vf_coef", 0.0)
        _float(self, "ent_coef", 0.0)
        _float(self, "kl_coef", 0.0)
        if self.target_kl is not None:
            _float(self, "target_kl", 0.0, low_open=True)
        _float(self, "max_grad_norm", 0.0)
        _int(self, "save_every", minimum=0)
        _int(self, "lora_rank", minimum=0)
        _float(self, "lora_alpha", 0.0, low_open=True)
        _lora_embeddings(self)
        _int(self, "seed", minimum=0)
        _choice(self, "loss_normalisation", LOSS_NORMALISATIONS)
        _float(self, "baseline_decay", 0.0, 1.0, high_open=True)
        _int(self, "group_size")
        if self.spec.groups:
            _check(self.group_size >= 2, "group_size", f"must be >= 2 for --algorithm {self.algorithm} (the "
                   f"baseline of a sample is the other samples of its prompt), got {self.group_size}")
            _check(self.batch_size % self.group_size == 0, "batch_size",
                   f"must be a multiple of --group-size ({self.group_size}), got {self.batch_size}")

    @property
    def spec(self) -> Algorithm:
        """The record of the algorithm (`shared.algorithms`): what it chooses."""
        return ALGORITHMS[self.algorithm]

    @property
    def samples_per_prompt(self) -> int:
        """Completions sampled per prompt in a rollout: group_size for the group algorithms, else 1."""
        return self.group_size if self.spec.groups else 1

    @property
    def steps_per_rollout(self) -> tuple[int, int]:
        """(passes, rows per gradient step) of the update: ppo_epochs of minibatches for the
        ratio-clipped losses; one step on the whole rollout for the plain policy gradient (a second
        step on the same samples would need the ratio that PPO adds)."""
        if self.spec.epochs:
            return self.ppo_epochs, self.minibatch_size
        return 1, self.batch_size


@dataclass
class EvalConfig(_Config):
    """Evaluation of one or more models on the same prompts."""

    max_new_tokens: int = 16              # longest completion generated per prompt (greedy)
    batch_size: int = 64                  # prompts per generation batch
    perplexity_stride: int = 64           # sliding-window stride for texts longer than the context
    bootstrap_samples: int = 2000         # resamples of the paired bootstrap
    confidence: float = 0.95              # level of every reported interval
    calibration_bins: int = 10            # bins of the reliability diagram / ECE
    seed: int = 0                         # seeds the bootstrap

    def __post_init__(self):
        for name in ("max_new_tokens", "batch_size", "perplexity_stride", "bootstrap_samples",
                     "calibration_bins"):
            _int(self, name)
        _float(self, "confidence", 0.0, 1.0, low_open=True, high_open=True)
        _int(self, "seed", minimum=0)


@dataclass
class RewardModelConfig(_Config):
    """A reward model (TensorFlow): the SFT backbone with a scalar head, trained on preference pairs
    with the Bradley-Terry loss."""

    epochs: int = 10                      # passes over the preference pairs
    lr: float = 3e-4                      # Adam learning rate
    batch_size: int = 32                  # pairs per optimizer step
    seed: int = 0                         # seeds the order of the pairs in each epoch
    xla: bool = False                     # XLA-compile the training step: one compile per batch shape

    def __post_init__(self):
        _int(self, "epochs")
        _float(self, "lr", 0.0, low_open=True)
        _int(self, "batch_size")
        _int(self, "seed", minimum=0)


# ----------------------------------------------------------------------------- decoders
# The two decoder-only families beside BERT. Field names are those of `transformers`' own
# config.json (GPT2Config; LlamaConfig / Qwen2Config / MistralConfig), so a downloaded folder's
# config reads as it is and the file we write is read back by the matching `transformers` class.
# The properties below give every architecture the same few names the trainers use
# (hidden_size, num_hidden_layers, num_attention_heads, head_size, max_position_embeddings, is_causal).

GPT2_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh", "gelu")  # the first two: the tanh form
LLAMA_MODEL_TYPES = ("llama", "qwen2", "mistral")

# Keys of a transformers-written decoder config.json that do not change the model.
_DECODER_BOOKKEEPING_KEYS = (_HF_BOOKKEEPING_KEYS - {"model_type", "bos_token_id", "eos_token_id", "tie_word_embeddings"}) | {
    "output_hidden_states", "is_encoder_decoder", "summary_type", "summary_use_proj",
    "summary_activation", "summary_proj_to_labels", "summary_first_dropout", "reorder_and_upcast_attn",
    "pretraining_tp", "n_ctx", "task_specific_params", "layer_types", "max_window_layers",
    "use_sliding_window", "generation_config", "quantization_config", "initializer_factor",
}


def _drop_bookkeeping(values: dict) -> dict:
    if values.get("attn_implementation") not in ATTN_IMPLEMENTATIONS:
        values.pop("attn_implementation", None)
    return {k: v for k, v in values.items() if k not in _DECODER_BOOKKEEPING_KEYS}


@dataclass
class GPT2Config(_Config):
    """GPT-2: pre-LayerNorm blocks, learned positions, tanh GELU. Field names are GPT2Config's."""

    vocab_size: int = 512                 # V
    n_positions: int = 128                # longest sequence the position table covers
    n_embd: int = 128                     # C: width of every token vector
    n_layer: int = 2                      # N: transformer blocks
    n_head: int = 4                       # H: attention heads; hs = C / H
    n_inner: int | None = None            # feed-forward width; None = 4 C
    activation_function: str = "gelu_new"  # "gelu_new" (tanh form, GPT-2's) or "gelu" (erf form)
    resid_pdrop: float = 0.1              # dropout on each residual branch
    embd_pdrop: float = 0.1               # dropout on the summed embeddings
    attn_pdrop: float = 0.1               # dropout on the attention weights
    layer_norm_epsilon: float = 1e-5      # epsilon inside every LayerNorm
    initializer_range: float = INIT_STD   # std of the normal init of weight matrices
    scale_attn_weights: bool = True       # scores / sqrt(hs), as every GPT-2
    scale_attn_by_inverse_layer_idx: bool = False  # extra 1/(layer+1) on the scores (not supported)
    tie_word_embeddings: bool = True      # lm_head.weight is transformer.wte.weight
    bos_token_id: int | None = None       # the folder's start token (GPT-2: <|endoftext|>)
    eos_token_id: int | None = None       # the folder's end token
    pad_token_id: int = 0                 # the id padded batches are filled with (GPT-2 has none: eos)
    attn_implementation: str = "sdpa"     # "sdpa": a fused attention kernel; "eager": written out

    def __post_init__(self):
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            _int(self, name)
        if self.n_inner is not None:
            _int(self, "n_inner")
        _check(self.n_embd % self.n_head == 0, "n_head",
               f"must divide n_embd ({self.n_embd} is not divisible by {self.n_head})")
        _choice(self, "activation_function", GPT2_ACTIVATIONS)
        for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
            _float(self, name, 0.0, 1.0, high_open=True)
        _float(self, "layer_norm_epsilon", 0.0, 1.0, low_open=True)
        _float(self, "initializer_range", 0.0, 10.0, low_open=True)
        _check(self.scale_attn_weights is True, "scale_attn_weights", "only true is supported")
        _check(self.scale_attn_by_inverse_layer_idx is False, "scale_attn_by_inverse_layer_idx",
               "only false is supported")
        _int(self, "pad_token_id", minimum=0)
        _check(self.pad_token_id < self.vocab_size, "pad_token_id",
               f"must be < vocab_size ({self.vocab_size}), got {self.pad_token_id}")
        _choice(self, "attn_implementation", ATTN_IMPLEMENTATIONS)

    model_type = "gpt2"
    is_causal = True
    attention_type = "causal"
    hidden_size = property(lambda self: self.n_embd)
    num_hidden_layers = property(lambda self: self.n_layer)
    num_attention_heads = property(lambda self: self.n_head)
    num_key_value_heads = property(lambda self: self.n_head)
    max_position_embeddings = property(lambda self: self.n_positions)
    intermediate_size = property(lambda self: self.n_inner or 4 * self.n_embd)
    head_size = property(lambda self: self.n_embd // self.n_head)

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
        return values

    @classmethod
    def _prepare(cls, values: dict, path) -> dict:
        values.pop("model_type", None)
        if values.get("add_cross_attention", False):
            raise ConfigError("add_cross_attention", "cross-attention is not supported", path)
        if values.get("pad_token_id") is None:  # GPT-2 pads with its end token, as its users do
            values["pad_token_id"] = values.get("eos_token_id") or 0
        return _drop_bookkeeping(values)


@dataclass
class LlamaConfig(_Config):
    """Llama / Qwen2 / Mistral: RMSNorm, rotary positions, SwiGLU, grouped-query attention.
    Field names are LlamaConfig's; `model_type` says which of the three a folder is."""

    model_type: str = "llama"             # "llama", "qwen2" (q/k/v with bias) or "mistral"
    vocab_size: int = 512                 # V
    hidden_size: int = 128                # C
    intermediate_size: int = 344          # I: SwiGLU width (Llama: about 8/3 C)
    num_hidden_layers: int = 2            # N
    num_attention_heads: int = 4          # H: query heads
    num_key_value_heads: int | None = None  # key/value heads (GQA); None = H (multi-head)
    head_dim: int | None = None           # hs; None = C / H
    hidden_act: str = "silu"              # SwiGLU's gate: silu
    max_position_embeddings: int = 128    # longest sequence (rotary positions have no table)
    rope_theta: float = 10000.0           # base of the rotary frequencies theta_i = base^(-2i/hs)
    rms_norm_eps: float = 1e-6            # epsilon inside every RMSNorm
    attention_bias: bool = False          # bias on q/k/v/o (Llama); Qwen2 always has q/k/v bias
    mlp_bias: bool = False                # bias on gate/up/down
    attention_dropout: float = 0.0        # dropout on the attention weights
    sliding_window: int | None = None     # Mistral/Qwen2 window; sequences must fit in it
    initializer_range: float = INIT_STD   # std of the normal init of weight matrices
    tie_word_embeddings: bool = False     # lm_head.weight is model.embed_tokens.weight
    bos_token_id: int | None = None       # the folder's start token
    eos_token_id: int | None = None       # the folder's end token
    pad_token_id: int = 0                 # the id padded batches are filled with
    attn_implementation: str = "sdpa"     # "sdpa": a fused attention kernel; "eager": written out

    def __post_init__(self):
        _choice(self, "model_type", LLAMA_MODEL_TYPES)
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "max_position_embeddings"):
            _int(self, name)
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        _int(self, "num_key_value_heads")
        _check(self.num_attention_heads % self.num_key_value_heads == 0, "num_key_value_heads",
               f"must divide num_attention_heads ({self.num_attention_heads} is not divisible by "
               f"{self.num_key_value_heads})")
        if self.head_dim is None:
            _check(self.hidden_size % self.num_attention_heads == 0, "num_attention_heads",
                   f"must divide hidden_size ({self.hidden_size} is not divisible by "
                   f"{self.num_attention_heads})")
            self.head_dim = self.hidden_size // self.num_attention_heads
        _int(self, "head_dim", minimum=2)
        _check(self.head_dim % 2 == 0, "head_dim", f"must be even (rotary pairs), got {self.head_dim}")
        _choice(self, "hidden_act", ("silu",))
        _float(self, "rope_theta", 0.0, low_open=True)
        _float(self, "rms_norm_eps", 0.0, 1.0, low_open=True)
        _float(self, "attention_dropout", 0.0, 1.0, high_open=True)
        if self.sliding_window is not None:
            _int(self, "sliding_window")
        _float(self, "initializer_range", 0.0, 10.0, low_open=True)
        _int(self, "pad_token_id", minimum=0)
        _check(self.pad_token_id < self.vocab_size, "pad_token_id",
               f"must be < vocab_size ({self.vocab_size}), got {self.pad_token_id}")
        _choice(self, "attn_implementation", ATTN_IMPLEMENTATIONS)

    is_causal = True
    attention_type = "causal"
    head_size = property(lambda self: self.head_dim)

    @property
    def qkv_bias(self) -> bool:
        """Qwen2 puts a bias on the q, k and v projections whatever attention_bias says."""
        return self.attention_bias or self.model_type == "qwen2"

    @property
    def o_bias(self) -> bool:
        return self.attention_bias and self.model_type != "qwen2"

    @property
    def context_length(self) -> int:
        """The longest sequence attended in full: a sliding window, where set, caps it."""
        return min(self.max_position_embeddings, self.sliding_window or self.max_position_embeddings)

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["rope_parameters"] = {"rope_type": "default", "rope_theta": self.rope_theta}
        names = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}
        values["architectures"] = [names[self.model_type]]
        return values

    @classmethod
    def _prepare(cls, values: dict, path) -> dict:
        # transformers 5 writes the rotary settings as rope_parameters; older folders as rope_theta
        # (+ rope_scaling). Only the plain rotary embedding ("default") is supported.
        rope = values.pop("rope_parameters", None) or values.pop("rope_scaling", None) or {}
        values.pop("rope_scaling", None)
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ConfigError("rope_parameters", f"only rope_type 'default' is supported, got "
                              f"{rope.get('rope_type', rope.get('type'))!r}", path)
        if "rope_theta" in rope:
            values.setdefault("rope_theta", rope["rope_theta"])
        if values.get("pad_token_id") is None:
            eos = values.get("eos_token_id")
            values["pad_token_id"] = (eos[0] if isinstance(eos, list) else eos) or 0
        if isinstance(values.get("eos_token_id"), list):  # several end tokens: the first one
            values["eos_token_id"] = values["eos_token_id"][0]
        return _drop_bookkeeping(values)


MODEL_CONFIGS = {"bert": ModelConfig, "gpt2": GPT2Config, "llama": LlamaConfig, "qwen2": LlamaConfig,
                 "mistral": LlamaConfig}
ARCHITECTURES = ("bert", "gpt2", "llama")  # the families: qwen2 and mistral are llama's kind


def architecture_of(config) -> str:
    """The family a model config belongs to: "bert", "gpt2" or "llama"."""
    return {ModelConfig: "bert", GPT2Config: "gpt2", LlamaConfig: "llama"}[type(config)]


def model_config_from_dict(values: dict, path=None):
    """The config of any supported architecture, picked by `model_type` (no model_type: ours, BERT)."""
    if not isinstance(values, dict):
        raise ConfigError("(file)", "expected a JSON object", path)
    model_type = values.get("model_type", "bert")
    if model_type not in MODEL_CONFIGS:
        raise ConfigError("model_type", f"unsupported model_type {model_type!r} (supported: "
                          f"{', '.join(MODEL_CONFIGS)})", path)
    return MODEL_CONFIGS[model_type].from_dict(values, path=path)


def load_model_config(path: str | os.PathLike):
    """Read a `config.json` of any supported architecture (ours or one `transformers` wrote);
    errors name the file and the field."""
    return model_config_from_dict(_read_json(path), path=path)


__all__ = ["ModelConfig", "GPT2Config", "LlamaConfig", "SFTConfig", "DPOConfig", "PPOConfig", "EvalConfig",
           "RewardModelConfig", "load_model_config", "model_config_from_dict", "architecture_of",
           "ARCHITECTURES", "ATTENTION_TYPES"]
