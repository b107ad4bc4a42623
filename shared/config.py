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

from shared.algorithms import ALGORITHMS, RL_ALGORITHMS, Algorithm
from shared.constants import INIT_STD, LAYER_NORM_EPS, LOSS_NORMALISATIONS
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

    @property
    def is_causal(self) -> bool:
        return self.attention_type == "causal"

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

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

    objective: str = "clm"                # clm: causal next-token loss (completion-only on sft records); mlm: masked LM
    steps: int = 600                      # optimizer steps (ignored when epochs is set)
    epochs: float | None = None           # passes over the training data, instead of steps
    batch_size: int = 32                  # sequences per optimizer step
    lr: float = 1e-3                      # peak AdamW learning rate
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
    lora_rank: int = 0                    # LoRA rank on the attention projections; 0 = full fine-tune
    lora_alpha: float = 16.0              # LoRA scaling numerator (scale = alpha / rank)
    seed: int = 0                         # seeds data order, masking, dropout and init

    def __post_init__(self):
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
        _int(self, "seed", minimum=0)


@dataclass
class DPOConfig(SFTConfig):
    """Direct preference optimisation (PyTorch): SFT's optimizer, schedule and checkpoints, on
    preference pairs, against the frozen SFT model."""

    steps: int = 300                      # optimizer steps (ignored when epochs is set)
    batch_size: int = 32                  # pairs per optimizer step
    lr: float = 1e-4                      # peak AdamW learning rate
    warmup_steps: int = 10                # linear warm-up from 0 to lr, then linear decay to 0
    beta: float = 0.1                     # inverse temperature of the implicit reward beta log(pi / ref)

    def __post_init__(self):
        super().__post_init__()
        _check(self.objective == "clm", "objective", f"DPO scores completions of a causal model, got {self.objective!r}")
        _float(self, "beta", 0.0, low_open=True)


@dataclass
class PPOConfig(_Config):
    """RL with a KL penalty to the frozen SFT model (TensorFlow): PPO and its relatives."""

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
    lr: float = 1e-4                      # Adam learning rate of policy and value head
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
    lora_rank: int = 0                    # train LoRA adapters of this rank on query/key/value (and, with ppo, the
                                          # value head) only; 0 = train every weight
    lora_alpha: float = 16.0              # LoRA scaling numerator (scale = alpha / rank)
    xla: bool = True                      # XLA-compile the traced train, scoring and decoding steps
    seed: int = 0                         # seeds sampling and minibatch order

    def __post_init__(self):
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


def load_model_config(path: str | os.PathLike) -> ModelConfig:
    """Read a `config.json` (ours or a Hugging Face BERT one); errors name the file and field."""
    return ModelConfig.from_json_file(path)


__all__ = ["ModelConfig", "SFTConfig", "DPOConfig", "PPOConfig", "EvalConfig", "RewardModelConfig", "load_model_config",
           "ATTENTION_TYPES"]
