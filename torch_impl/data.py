"""Data the way PyTorch users load it: records -> `Example`s -> `Dataset` -> `DataLoader`.

The batch sampler is the epoch plan of `shared.data.plan_epoch` (length-bucketed, task-balanced,
a pure function of (seed, epoch)), so a resumed run reads the very batches the killed one would
have. Padding is dynamic (to the longest row of each batch); masked-LM labels are drawn per step
(`to_model_batch`). The TensorFlow side's one pipeline, the reward model's preference pairs, is
`tf.data` (`tf_impl.reward_model.preference_batches`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from shared.config import SFTConfig
from shared.data import collate, encode_sft, encode_text, mask_tokens, plan_epoch


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int] | None   # None: filled by MLM masking at batch time
    task: str | None
    prompt: str | None = None


def encode_records(records, kind: str, tokenizer, objective: str, max_length: int):
    """Records -> Examples. Returns (examples, number truncated)."""
    examples, truncated = [], 0
    for r in records:
        if kind == "text":
            ids, cut = encode_text(tokenizer, r["text"], max_length)
            labels = list(ids) if objective == "clm" else None
            examples.append(Example(ids, labels, None))
        else:
            ids, labels, cut = encode_sft(tokenizer, r["prompt"], r["completion"], max_length)
            examples.append(Example(ids, labels if objective == "clm" else None, r.get("task"), r["prompt"]))
        truncated += cut
    return examples, truncated


class SFTDataset(Dataset):
    """The encoded examples: item i is `Example` i."""

    def __init__(self, examples):
        self.examples = examples

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        return self.examples[i]


class EpochPlanSampler(Sampler):
    """A batch sampler: the index batches of `shared.data.plan_epoch` (length-bucketed, and
    task-balanced with several tasks), a pure function of (seed, epoch). `set_epoch(epoch, start)`
    picks the epoch and the batch to begin at, so a resumed run continues the very plan the killed
    one followed."""

    def __init__(self, examples, batch_size: int, seed: int, task_weights=None):
        self.lengths, self.tasks = [len(e.input_ids) for e in examples], [e.task for e in examples]
        self.batch_size, self.seed, self.task_weights = batch_size, seed, task_weights
        self.set_epoch(0)

    def set_epoch(self, epoch: int, start: int = 0):
        self.epoch, self.start = epoch, start
        self.plan = plan_epoch(self.lengths, self.tasks, self.batch_size, self.seed, epoch, self.task_weights)

    def __iter__(self):
        return (batch.tolist() for batch in self.plan[self.start:])

    def __len__(self):
        return len(self.plan) - self.start


def collate_examples(examples, pad_id: int) -> dict:
    """Pad a list of Examples to the longest (dynamic padding): input_ids, attention_mask and,
    where the examples carry them (causal LM), labels. NumPy arrays."""
    labels = None if examples[0].labels is None else [e.labels for e in examples]
    return collate([e.input_ids for e in examples], pad_id, labels=labels)


def data_loader(examples, tokenizer, **batching) -> DataLoader:
    """`torch.utils.data.DataLoader` over the examples, batched as `batching` says (batch_size=B:
    in order; batch_sampler=S: S's batches), in this process (workers would gain nothing on
    tokenised ids and cost start-up time). It gets a generator of its own: each iterator draws a
    base seed from it, which from the global generator would shift the dropout stream."""
    collate_fn = functools.partial(collate_examples, pad_id=tokenizer.pad_id)
    return DataLoader(SFTDataset(examples), collate_fn=collate_fn, generator=torch.Generator(), **batching)


def to_model_batch(batch, tokenizer, objective, rng, device, mlm_probability=SFTConfig.mlm_probability) -> dict:
    """A padded batch -> tensors on `device`. For MLM the labels are drawn here: each eligible token
    is masked with `mlm_probability`, by `rng` (seeded per step, so a resumed run draws the same)."""
    if objective == "mlm":
        batch = dict(batch)
        batch["input_ids"], batch["labels"] = mask_tokens(
            batch["input_ids"], batch["attention_mask"], tokenizer.special_ids, tokenizer.mask_id,
            tokenizer.vocab_size, rng, probability=mlm_probability)
    return {k: torch.as_tensor(v, device=device) for k, v in batch.items()}
