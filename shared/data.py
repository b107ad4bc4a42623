"""Records, loading and batching. Everything here is NumPy; both frameworks take the batches as-is.

Record kinds (the conventions of TRL / `datasets`):

    kind        required fields                optional fields     used by
    text        text                                               pretraining, n-gram LM, perplexity
    sft         prompt, completion             task                SFT (completion-only loss)
    prompt      prompt                         reference, task     PPO rollouts, evaluation
    preference  prompt, chosen, rejected                           reward model

A sequence is laid out as BERT lays out a pair: `[CLS] prompt [SEP] completion [SEP]`. The
model reads the prompt and its [SEP], then produces the completion and a final [SEP] (= stop).

Shape legend, as in the model files: B batch, T time (tokens), Tq query length, Tk key length.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from shared.constants import IGNORE_INDEX
from shared.errors import DataError, SftrlError
from shared.random_streams import generator

RECORD_KINDS = {
    # kind: (required string fields, optional string fields)
    "text": (("text",), ()),
    "sft": (("prompt", "completion"), ("task",)),
    "prompt": (("prompt",), ("reference", "task")),
    "preference": (("prompt", "chosen", "rejected"), ()),
}


# ----------------------------------------------------------------------------- loading

def _validate(record, kind: str, path, line: int) -> dict:
    """Check one parsed JSON value against its kind; return a dict with every field present."""
    if not isinstance(record, dict):
        raise DataError(path, f"expected a JSON object, got {type(record).__name__}", line)
    required, optional = RECORD_KINDS[kind]
    extra = sorted(set(record) - set(required) - set(optional))
    if extra:
        allowed = ", ".join(required + optional)
        raise DataError(path, f"unexpected field for a '{kind}' record (allowed: {allowed})",
                        line, extra[0])
    out = {}
    for name in required:
        if name not in record:
            raise DataError(path, "missing", line, name)
        value = record[name]
        if not isinstance(value, str):
            raise DataError(path, f"must be a string, got {type(value).__name__}", line, name)
        if not value.strip():
            raise DataError(path, "is empty", line, name)
        out[name] = value
    for name in optional:
        value = record.get(name)
        if value is not None and not isinstance(value, str):
            raise DataError(path, f"must be a string, got {type(value).__name__}", line, name)
        out[name] = value
    return out


def load_jsonl(path, kind: str) -> list[dict]:
    """Read and validate every record of a `.jsonl` file (or a plain `.txt` file as `text`).

    Nothing is returned unless the whole file is valid: an error names `path:line` and the field.
    Blank lines are skipped. In a `.txt` file each non-blank line is one `text` record, so a
    local copy of a raw corpus (e.g. WikiText's `wiki.train.raw`) can be used as it is.
    """
    if kind not in RECORD_KINDS:
        raise ValueError(f"unknown record kind {kind!r}; known: {', '.join(RECORD_KINDS)}")
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file")
    if path.is_dir():
        raise DataError(path, "is a directory, expected a file")
    is_txt = path.suffix in (".txt", ".raw")
    if is_txt and kind != "text":
        raise DataError(path, f"a plain-text file can only hold 'text' records, not '{kind}'")
    records = []
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(path, f"not UTF-8 text (byte {e.start} of the line)", line_no) from None
            if not line.strip():
                continue
            if is_txt:
                records.append({"text": line.rstrip("\r\n")})
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(path, f"invalid JSON ({e.msg} at column {e.colno})", line_no) from None
            records.append(_validate(value, kind, path, line_no))
    if not records:
        raise DataError(path, "empty file (no records)")
    return records


# ----------------------------------------------------------------------------- encoding

def encode_sft(tokenizer, prompt: str, completion: str, max_length: int):
    """Token ids and completion-only labels of `[CLS] prompt [SEP] completion [SEP]`.

    Labels copy the ids on the completion and its final [SEP] and are IGNORE_INDEX elsewhere;
    the model shifts them by one inside its loss (position t predicts token t+1).
    Too long: the prompt loses tokens from its start (its end is what the completion follows);
    if the completion alone does not fit, it is cut and loses its final [SEP], so the model is
    never taught to stop early. Returns (input_ids, labels, truncated).
    """
    cls_id, sep_id = tokenizer.cls_id, tokenizer.sep_id
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    completion_ids = tokenizer.encode(completion, add_special_tokens=False)
    truncated = False
    if 3 + len(prompt_ids) + len(completion_ids) > max_length:
        truncated = True
        room = max_length - 3 - len(completion_ids)
        if room >= 0:
            prompt_ids = prompt_ids[len(prompt_ids) - room:] if room else []
        else:
            prompt_ids = []
            ids = [cls_id, sep_id] + completion_ids[:max_length - 2]
            return ids, [IGNORE_INDEX, IGNORE_INDEX] + ids[2:], truncated
    context = [cls_id] + prompt_ids + [sep_id]
    target = completion_ids + [sep_id]
    return context + target, [IGNORE_INDEX] * len(context) + target, truncated


def encode_prompt(tokenizer, prompt: str, max_length: int):
    """Ids of `[CLS] prompt [SEP]`, the context a completion is generated from.

    A prompt longer than `max_length` keeps its last tokens. Returns (input_ids, truncated).
    """
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    room = max_length - 2
    truncated = len(prompt_ids) > room
    if truncated:
        prompt_ids = prompt_ids[len(prompt_ids) - room:] if room > 0 else []
    return [tokenizer.cls_id] + prompt_ids + [tokenizer.sep_id], truncated


def check_prompts_fit(path, records, tokenizer, max_new_tokens: int, context: int, flag: str,
                      whose: str = "the model's context") -> None:
    """Every prompt plus the completion to generate must fit the model's positions; else a
    DataError naming PATH:LINE and both lengths (rather than a prompt silently cut, or a
    position-embedding lookup out of range). Training data is truncated instead (encode_sft)."""
    with open(path, "rb") as f:  # the line of each record (load_jsonl skips blank lines)
        lines = [n for n, raw in enumerate(f, start=1) if raw.decode("utf-8").strip()]
    lengths = [len(ids) for ids in tokenizer.encode_batch([r["prompt"] for r in records], add_special_tokens=False)]
    for record_no, n in enumerate(lengths):
        n += 2  # [CLS] prompt [SEP]
        if n + max_new_tokens > context:
            raise SftrlError(f"{flag} {path}:{lines[record_no]}: the prompt is {n} tokens ([CLS] and [SEP] "
                             f"included) and --max-new-tokens is {max_new_tokens}: {n + max_new_tokens} > "
                             f"{context}, {whose} (max_position_embeddings); shorten the prompt or "
                             "lower --max-new-tokens")


def encode_text(tokenizer, text: str, max_length: int):
    """Ids of `[CLS] text [SEP]`, cut at `max_length` (the [SEP] is kept). Returns (ids, truncated)."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    truncated = len(ids) > max_length - 2
    return [tokenizer.cls_id] + ids[:max(max_length - 2, 0)] + [tokenizer.sep_id], truncated


# ----------------------------------------------------------------------------- batching

def pad(sequences: Sequence[Sequence[int]], value: int, side: str = "right",
        length: int | None = None) -> np.ndarray:
    """Stack variable-length sequences into a (B, T) int64 array, T = longest (dynamic padding)."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    longest = max((len(s) for s in sequences), default=0)
    length = longest if length is None else length
    if length < longest:
        raise ValueError(f"length {length} is shorter than the longest sequence ({longest})")
    out = np.full((len(sequences), length), value, dtype=np.int64)  # (B, T)
    for i, s in enumerate(sequences):
        if len(s):
            if side == "right":
                out[i, :len(s)] = s
            else:
                out[i, length - len(s):] = s
    return out


def collate(input_ids: Sequence[Sequence[int]], pad_id: int, labels=None, side: str = "right",
            length: int | None = None) -> dict[str, np.ndarray]:
    """A batch dict: `input_ids` (B, T), `attention_mask` (B, T) with 1 on real tokens and,
    when given, `labels` (B, T) padded with IGNORE_INDEX. Right padding for training, left
    padding for generation (so every prompt ends at the same position)."""
    batch = {
        "input_ids": pad(input_ids, pad_id, side, length),
        "attention_mask": pad([[1] * len(s) for s in input_ids], 0, side, length),
    }
    if labels is not None:
        batch["labels"] = pad(labels, IGNORE_INDEX, side, length)
    return batch


def length_bucketed_batches(lengths: Sequence[int], batch_size: int, rng: np.random.Generator,
                            bucket_factor: int = 50) -> list[np.ndarray]:
    """Index batches of similar-length examples, in random order.

    Shuffle, cut into chunks of `batch_size * bucket_factor`, sort each chunk by length, cut it
    into batches, shuffle the batches. Each batch then pads to a length close to its members'
    own, while the order stays random from epoch to epoch.
    """
    lengths = np.asarray(lengths)
    order = rng.permutation(len(lengths))
    chunk = batch_size * bucket_factor
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def shuffled_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Index batches of a random permutation (the last one may be smaller)."""
    order = rng.permutation(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def mask_tokens(input_ids: np.ndarray, attention_mask: np.ndarray, special_ids, mask_id: int,
                vocab_size: int, rng: np.random.Generator, probability: float = 0.15):
    """BERT's masked-LM corruption: returns (masked_input_ids, labels), both (B, T).

    Each real, non-special token is chosen with `probability`; chosen tokens get their id as
    label (others IGNORE_INDEX) and are replaced by [MASK] 80% of the time, by a random token
    10%, and left as they are 10% -- the recipe of Devlin et al. (2019), as in Hugging Face's
    DataCollatorForLanguageModeling.
    """
    input_ids = np.asarray(input_ids)
    special = np.isin(input_ids, list(special_ids)) | (np.asarray(attention_mask) == 0)
    chosen = (rng.random(input_ids.shape) < probability) & ~special  # (B, T)
    labels = np.where(chosen, input_ids, IGNORE_INDEX)
    roll = rng.random(input_ids.shape)
    replace_mask = chosen & (roll < 0.8)
    replace_random = chosen & (roll >= 0.8) & (roll < 0.9)
    random_ids = rng.integers(0, vocab_size, size=input_ids.shape)
    masked = np.where(replace_mask, mask_id, input_ids)
    masked = np.where(replace_random, random_ids, masked)
    return masked.astype(np.int64), labels.astype(np.int64)


def build_attention_mask(attention_mask: np.ndarray, causal: bool,
                         query_length: int | None = None,
                         query_offset: int | None = None) -> np.ndarray:
    """The boolean mask every attention layer uses: True where query i may attend to key j.

    attention_mask: (B, Tk) with 1 on real tokens. Returns (B, 1, Tq, Tk): padding keys are
    hidden from every query and, if `causal`, keys after the query are hidden too. Query i sits
    at key position query_offset + i; by default the queries are the last Tq positions of the
    keys (Tq = Tk unless decoding with a cache). Built once here, the same array goes to NumPy,
    PyTorch and TensorFlow.
    """
    attention_mask = np.asarray(attention_mask)
    batch, key_length = attention_mask.shape
    query_length = key_length if query_length is None else query_length
    query_offset = key_length - query_length if query_offset is None else query_offset
    allowed = np.broadcast_to(attention_mask[:, None, None, :].astype(bool),
                              (batch, 1, query_length, key_length))  # (B, 1, Tq, Tk)
    if causal:
        query_pos = query_offset + np.arange(query_length)[:, None]            # (Tq, 1)
        key_pos = np.arange(key_length)[None, :]                                 # (1, Tk)
        allowed = allowed & (key_pos <= query_pos)
    return np.ascontiguousarray(allowed)


def infer_kind(record: dict) -> str | None:
    """The record kind whose required fields a record has (most specific first)."""
    for kind in ("preference", "sft", "prompt", "text"):
        if all(name in record for name in RECORD_KINDS[kind][0]):
            return kind
    return None


def load_any(path) -> tuple[str, list[dict]]:
    """Load a data file whose kind is read off its first record. Returns (kind, records)."""
    path = Path(path)
    if path.suffix in (".txt", ".raw"):
        return "text", load_jsonl(path, "text")
    kind = None
    if path.is_file():
        with open(path, "rb") as f:
            for raw in f:
                if raw.strip():
                    try:
                        first = json.loads(raw.decode("utf-8"))
                    except (UnicodeDecodeError, json.JSONDecodeError):
                        break  # load_jsonl below reports it with its line number
                    kind = infer_kind(first) if isinstance(first, dict) else None
                    if kind is None and isinstance(first, dict):
                        raise DataError(path, "cannot tell the record kind from the fields "
                                        f"{', '.join(sorted(first)) or '(none)'}; expected one of: "
                                        + "; ".join(", ".join(r) for r, _ in RECORD_KINDS.values()), 1)
                    break
    return (kind or "text"), load_jsonl(path, kind or "text")


def record_texts(record: dict) -> list[str]:
    """Every non-empty string field of a record (what a tokenizer is trained on)."""
    return [v for k, v in record.items() if isinstance(v, str) and v and k != "task"]


def plan_epoch(lengths: Sequence[int], tasks: Sequence[str | None], batch_size: int, seed: int,
               epoch: int, task_weights: dict[str, float] | None = None,
               bucket_factor: int = 50) -> list[np.ndarray]:
    """Index batches of one epoch: a pure function of (seed, epoch) (the stream `data_order`), so training can resume
    mid-epoch by remembering only the batch number.

    Without tasks (or with one), every example once, length-bucketed. With several tasks the
    epoch draws len(lengths) examples by task -- equally often per task, or by `task_weights`
    -- each task cycling through its own shuffled examples, then buckets them by length.
    """
    rng = generator("data_order", seed, epoch)
    lengths = np.asarray(lengths)
    names = sorted({t for t in tasks if t is not None})
    if len(names) <= 1 or any(t is None for t in tasks):
        return length_bucketed_batches(lengths, batch_size, rng, bucket_factor)
    weights = np.array([(task_weights or {}).get(name, 1.0 if not task_weights else 0.0)
                        for name in names], dtype=np.float64)
    if weights.sum() <= 0:
        raise ValueError("task weights must give at least one task a positive weight")
    by_task = {name: rng.permutation([i for i, t in enumerate(tasks) if t == name]) for name in names}
    cursor = dict.fromkeys(names, 0)
    draws = rng.choice(len(names), size=len(lengths), p=weights / weights.sum())
    order = []
    for k in draws:
        pool = by_task[names[k]]
        order.append(pool[cursor[names[k]] % len(pool)])
        cursor[names[k]] += 1
    order = np.array(order)
    batches = length_bucketed_batches(lengths[order], batch_size, rng, bucket_factor)
    return [order[b] for b in batches]
