"""A learned reward model in TensorFlow: the SFT backbone with a scalar head, trained on
preference pairs with the Bradley-Terry loss  -log sigmoid(r(chosen) - r(rejected)).

A pair is scored as two sequences `[CLS] prompt [SEP] completion [SEP]`; the reward is the
head's output at the last real token.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from safetensors.numpy import save

from shared.config import RewardModelConfig, load_model_config
from shared.constants import REWARD_MODEL_ADAM_EPS
from shared.data import collate, encode_sft
from shared.errors import CheckpointError, SftrlError
from shared.io import atomic_write_bytes, atomic_write_text
from shared.progress import progress_bar
from shared.random_streams import generator
from tf_impl import losses
from tf_impl.convert import assign_numpy_state_dict, read_model_weights, to_numpy_state_dict
from tf_impl.architectures import RewardModel
from tf_impl.optimizers import adam


def _read(directory):
    directory = Path(directory)
    try:
        config = load_model_config(directory / "config.json")
    except SftrlError as e:
        raise CheckpointError(str(e)) from None
    return config, read_model_weights(directory, config)


def init_from_sft(sft_dir) -> RewardModel:
    """The SFT model's backbone and a zero-initialised reward head (its LM head is not used).
    Any architecture: the backbone is the one under its Hugging Face name (bert, transformer, model)."""
    config, weights = _read(sft_dir)
    model = RewardModel(config)
    head = {k: v for k, v in to_numpy_state_dict(model).items() if k.startswith("reward_head.")}
    backbone = {k: v for k, v in weights.items() if k.startswith(model.backbone_name + ".")}
    assign_numpy_state_dict(model, {**backbone, **head}, str(sft_dir))
    return model


def load_reward_model(directory) -> RewardModel:
    config, weights = _read(directory)
    if not any(k.startswith("reward_head.") for k in weights):
        raise CheckpointError(f"{directory}: not a reward model (no reward_head weights); train one with "
                              "`sftrl reward-model`")
    model = RewardModel(config)
    assign_numpy_state_dict(model, weights, str(directory))
    return model


def preference_batches(tokenizer, records, max_length: int, batch_size: int, pad_to_multiple_of: int = 1
                       ) -> tf.data.Dataset:
    """Preference pairs as a `tf.data` pipeline, in the records' order. Each element is a batch
    (chosen_ids, chosen_mask, rejected_ids, rejected_mask) of `[CLS] prompt [SEP] answer [SEP]`,
    padded to the longest sequence of its batch (right padding, mask 0 there), rounded up to a
    multiple of pad_to_multiple_of (fewer distinct shapes: fewer XLA compiles)."""
    def side(field):
        return tf.ragged.constant([encode_sft(tokenizer, r["prompt"], r[field], max_length)[0] for r in records],
                                  dtype=tf.int32)

    def with_masks(chosen, rejected):
        return chosen, tf.ones_like(chosen), rejected, tf.ones_like(rejected)

    def rounded_up(c_ids, c_mask, r_ids, r_mask):
        def pad(x, value):                                                  # (B, T) -> (B, T rounded up)
            extra = -tf.shape(x)[1] % pad_to_multiple_of
            return tf.pad(x, [[0, 0], [0, extra]], constant_values=value)
        return pad(c_ids, pad_id), pad(c_mask, 0), pad(r_ids, pad_id), pad(r_mask, 0)
    pairs = tf.data.Dataset.from_tensor_slices((side("chosen"), side("rejected"))).map(with_masks)
    pad_id = tokenizer.pad_id
    batches = pairs.padded_batch(batch_size, padding_values=(pad_id, 0, pad_id, 0))
    return batches.map(rounded_up) if pad_to_multiple_of > 1 else batches


def pairwise_accuracy(model, records, tokenizer, max_length, batch_size=128):
    """Share of pairs where r(chosen) > r(rejected)."""
    wins = []
    for c_ids, c_mask, r_ids, r_mask in preference_batches(tokenizer, records, max_length, batch_size):
        wins.extend((model(c_ids, c_mask).numpy() > model(r_ids, r_mask).numpy()).tolist())
    return float(np.mean(wins))


def reward_model_optimizer(lr: float) -> keras.optimizers.Adam:
    """The reward model's Adam: Keras' default epsilon (1e-7), which it has always trained with."""
    return adam(lr, epsilon=REWARD_MODEL_ADAM_EPS)


def bradley_terry_step(model, optimizer, jit_compile=False):
    """One training step of the reward model, traced (and XLA-compiled with jit_compile=True):
    the Bradley-Terry loss -mean log sigmoid(r(chosen) - r(rejected)) of a batch of pairs, its
    gradient, one optimizer step. The returned function takes (chosen ids, mask, rejected ids,
    mask) and returns (loss, share of pairs ranked right)."""
    @tf.function(reduce_retracing=True, jit_compile=jit_compile)
    def step(c_ids, c_mask, r_ids, r_mask):
        with tf.GradientTape() as tape:
            chosen, rejected = model(c_ids, c_mask, training=True), model(r_ids, r_mask, training=True)
            loss = losses.bradley_terry_loss(chosen, rejected)
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)]
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss, tf.reduce_mean(tf.cast(chosen > rejected, tf.float32))
    return step


def train_reward_model(model, tokenizer, records, eval_records, config: RewardModelConfig, out_dir, quiet=False):
    """Bradley-Terry training; writes the model, tokenizer, metrics.jsonl. Returns the summary.

    config.xla: XLA-compile the step; batches are then padded to a multiple of 16 tokens, so a few
    shapes are compiled, not one per batch length (padding is masked: the same loss). Each shape
    costs a compile, which pays back only where the compiled step is faster than the traced one;
    `sftrl bench --suite train` compares the two on the machine at hand.

    Dropout is on while training; for repeatable runs call `keras.utils.set_random_seed(seed)`
    before building the model (Keras layers take their dropout seeds when they are created).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    max_length = model.config.max_position_embeddings
    optimizer = reward_model_optimizer(config.lr)
    optimizer.build(model.trainable_variables)
    step = bradley_terry_step(model, optimizer, jit_compile=config.xla)

    started = time.perf_counter()
    total = config.epochs * ((len(records) + config.batch_size - 1) // config.batch_size)
    bar = progress_bar(total, "reward model", "step", quiet=quiet)
    lines = []
    for epoch in range(config.epochs):
        order = generator("preference_order", config.seed, epoch).permutation(len(records))  # the epoch's shuffle
        for batch in preference_batches(tokenizer, [records[i] for i in order], max_length, config.batch_size,
                                        pad_to_multiple_of=16 if config.xla else 1):
            loss, accuracy = step(*batch)
            lines.append({"step": len(lines) + 1, "train/loss": float(loss), "train/accuracy": float(accuracy)})
            bar.set_postfix(loss=f"{float(loss):.3f}")
            bar.update(1)
    bar.close()
    summary = {"epochs": config.epochs, "train_seconds": round(time.perf_counter() - started, 2),
               "train/pairwise_accuracy": pairwise_accuracy(model, records, tokenizer, max_length)}
    if eval_records:
        summary["eval/pairwise_accuracy"] = pairwise_accuracy(model, eval_records, tokenizer, max_length)
    atomic_write_bytes(out_dir / "model.safetensors", save(to_numpy_state_dict(model), metadata={"format": "pt"}))
    model.config.to_json_file(out_dir / "config.json")
    tokenizer.save_pretrained(out_dir, model.config.max_position_embeddings, generates=False)
    atomic_write_text(out_dir / "metrics.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    atomic_write_text(out_dir / "trainer_state.json", json.dumps(summary, indent=2) + "\n")
    return summary


class ModelReward:
    """reward(prompt, completion, reference) from a reward model; `batch` scores many in one pass."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.max_length = model.config.max_position_embeddings

    def batch(self, prompts, completions, references=None):
        ids = [encode_sft(self.tokenizer, p, c, self.max_length)[0] for p, c in zip(prompts, completions)]
        batch = collate(ids, self.tokenizer.pad_id)
        return self.model(tf.constant(batch["input_ids"], tf.int32),
                          tf.constant(batch["attention_mask"], tf.int32)).numpy().tolist()

    def __call__(self, prompt, completion, reference=None):
        return self.batch([prompt], [completion])[0]


def reward_fn_from_model(model, tokenizer):
    return ModelReward(model, tokenizer)
