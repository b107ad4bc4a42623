"""Built-in, verifiable tasks: the data is generated, and every answer can be checked exactly.

    copy: k d a m     ->  k d a m
    reverse: k d a m  ->  m a d k
    sort: k d a m     ->  a d k m
    add: 47 + 385     ->  432

Because the right answer follows from the prompt, a reward needs no labels: RL can train on
prompts alone while SFT needs (prompt, completion) pairs. Two scorers per answer:

* exact:   1 if the normalised completion equals the answer, else 0 (a sparse reward);
* partial: the share of answer positions that are right, in [0, 1] (a shaped reward). Items are
  compared position by position (digits of a sum aligned from the right) and divided by the
  longer of the two lengths, so extra or missing items cost credit.

Generation uses `random.Random(seed)` only, so the same seed gives byte-identical files. The
pretraining text comes in two variants: `text.*`, the clean corpus of `shared/corpus.py` (no
solved instance, its own random stream), and `text_contaminated.*`, "prompt = answer" lines --
solved task instances, i.e. labelled data, kept to measure what such pretraining text is worth.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

from shared.corpus import make_clean_text
from shared.errors import DataError
from shared.io import atomic_write_text

TASKS = ("copy", "reverse", "sort", "add")
SYMBOLS = string.ascii_lowercase
MIN_ITEMS, MAX_ITEMS = 3, 6           # list length of copy / reverse / sort
MAX_ADDEND = 999                      # add: both numbers in [0, MAX_ADDEND]

# Default number of records per file of `sftrl data`. Labelled data (sft) is scarce; prompts
# with a verifier are plentiful -- the setting in which RL can improve on SFT.
DEFAULT_SIZES = {
    "sft.train": 400, "sft.eval": 200,
    "prompt.train": 4000, "prompt.eval": 400,
    "preference.train": 1000, "preference.eval": 200,
    # Pretraining text is the most plentiful of all (the pipeline's first stage, causal LM).
    # text: the clean corpus (shared/corpus.py), unlabelled: task symbols, prompts without
    # answers, no solved instance. text_contaminated: "prompt = answer" lines, solved instances;
    # its sizes default to text's (the same amount of text, to compare the two).
    "text.train": 20000, "text.eval": 200,
    "text_contaminated.train": 20000, "text_contaminated.eval": 200,
}


# ----------------------------------------------------------------------------- solving and scoring

def parse_prompt(prompt: str) -> tuple[str, list[str]]:
    """Split `"task: arguments"` into the task name and its argument items."""
    task, sep, rest = prompt.partition(":")
    task = task.strip()
    if not sep or task not in TASKS:
        raise ValueError(f"not a built-in task prompt (expected 'TASK: ...' with TASK one of "
                         f"{', '.join(TASKS)}): {prompt[:60]!r}")
    if task == "add":
        a, plus, b = rest.partition("+")
        if not plus or not a.strip().isdigit() or not b.strip().isdigit():
            raise ValueError(f"add prompt must read 'add: A + B': {prompt[:60]!r}")
        return task, [a.strip(), b.strip()]
    items = rest.split()
    if not items:
        raise ValueError(f"{task} prompt has no items: {prompt[:60]!r}")
    return task, items


def solve(prompt: str) -> str:
    """The one right completion of a built-in task prompt."""
    task, items = parse_prompt(prompt)
    if task == "copy":
        return " ".join(items)
    if task == "reverse":
        return " ".join(reversed(items))
    if task == "sort":
        return " ".join(sorted(items))
    return str(int(items[0]) + int(items[1]))


def normalize_answer(text: str) -> str:
    """Whitespace-insensitive form used for comparison: `' a  b '` -> `'a b'`."""
    return " ".join(text.split())


def exact_match(prompt: str, completion: str) -> float:
    """1.0 if the completion is the right answer (up to whitespace), else 0.0."""
    return float(normalize_answer(completion) == solve(prompt))


def partial_credit(prompt: str, completion: str) -> float:
    """Share of answer positions that are right: matches / max(len(answer), len(completion))."""
    task, _ = parse_prompt(prompt)
    target = solve(prompt)
    if task == "add":
        # Digits aligned from the right: the units digit is compared with the units digit.
        got, want = normalize_answer(completion)[::-1], target[::-1]
    else:
        got, want = completion.split(), target.split()
    if not got:
        return 0.0
    matches = sum(g == w for g, w in zip(got, want))
    return matches / max(len(got), len(want))


def score(prompt: str, completion: str, partial: bool = True) -> float:
    """Reward in [0, 1]: partial credit (shaped) or exact match (sparse)."""
    return partial_credit(prompt, completion) if partial else exact_match(prompt, completion)


def is_task_prompt(prompt: str) -> bool:
    """Whether `prompt` is a built-in task's (so a verifier can score its completions)."""
    try:
        parse_prompt(prompt)
        return True
    except ValueError:
        return False


def task_scores(prompts, completions):
    """Per-prompt exact match and partial credit (two lists), None for a prompt that is not a
    built-in task."""
    exact, partial = [], []
    for prompt, completion in zip(prompts, completions):
        known = is_task_prompt(prompt)
        exact.append(exact_match(prompt, completion) if known else None)
        partial.append(partial_credit(prompt, completion) if known else None)
    return exact, partial


# ----------------------------------------------------------------------------- generation

def make_prompt(task: str, rng: random.Random) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    if task == "add":
        return f"add: {rng.randint(0, MAX_ADDEND)} + {rng.randint(0, MAX_ADDEND)}"
    n = rng.randint(MIN_ITEMS, MAX_ITEMS)
    return f"{task}: " + " ".join(rng.choice(SYMBOLS) for _ in range(n))


def random_prompt(rng: random.Random) -> str:
    """A prompt of a task drawn at random (the clean corpus's unanswered prompts)."""
    return make_prompt(rng.choice(TASKS), rng)


def corrupt(prompt: str, answer: str, rng: random.Random) -> str:
    """A plausible wrong answer (for preference pairs): never equal to `answer`."""
    task, _ = parse_prompt(prompt)
    for _ in range(100):
        if task == "add":
            value = int(answer) + rng.choice([-1, 1]) * rng.randint(1, 10)
            if rng.random() < 0.3:  # a wrong digit rather than an off-by-a-bit sum
                digits = list(answer)
                k = rng.randrange(len(digits))
                digits[k] = rng.choice(string.digits.replace(digits[k], ""))
                value = int("".join(digits))
            wrong = str(abs(value))
        else:
            items = answer.split()
            kind = rng.choice(["swap", "drop", "replace"])
            if kind == "swap" and len(items) > 1:
                k = rng.randrange(len(items) - 1)
                items[k], items[k + 1] = items[k + 1], items[k]
            elif kind == "drop" and len(items) > 1:
                del items[rng.randrange(len(items))]
            else:
                k = rng.randrange(len(items))
                items[k] = rng.choice(SYMBOLS.replace(items[k], ""))
            wrong = " ".join(items)
        if wrong != answer:
            return wrong
    raise AssertionError(f"could not corrupt {answer!r}")  # pragma: no cover


def _unique_prompts(rng: random.Random, count: int, seen: set[str]) -> list[str]:
    """`count` new prompts, tasks in turn (balanced), none in `seen` (which is updated)."""
    prompts = []
    while len(prompts) < count:
        prompt = make_prompt(TASKS[len(prompts) % len(TASKS)], rng)
        if prompt not in seen:
            seen.add(prompt)
            prompts.append(prompt)
    return prompts


def make_builtin_data(seed: int = 0, sizes: dict[str, int] | None = None) -> dict[str, list[dict]]:
    """All built-in files as lists of records. No prompt appears in two files (nor, as a line, in
    the clean text).

    Evaluation splits are drawn first, so changing a training size leaves them unchanged (the
    clean text.eval but for a line whose drawn prompt a training file holds). The task files
    draw from `random.Random(seed)` in the order they always have (text_contaminated where text
    was), the clean text from its own stream after them, so the task files stay as they were.
    """
    given = dict(sizes or {})
    unknown = set(given) - set(DEFAULT_SIZES)
    if unknown:
        raise ValueError(f"unknown split(s): {', '.join(sorted(unknown))}")
    for split in ("train", "eval"):
        if f"text.{split}" in given:
            given.setdefault(f"text_contaminated.{split}", given[f"text.{split}"])
    sizes = {**DEFAULT_SIZES, **given}
    rng = random.Random(seed)
    seen: set[str] = set()
    names = sorted(sizes, key=lambda name: (not name.endswith(".eval"), name))
    files: dict[str, list[dict]] = {}
    for name in names:
        kind = name.split(".")[0]
        if kind == "text":
            continue  # the clean corpus: below, from its own stream
        records = []
        for prompt in _unique_prompts(rng, sizes[name], seen):
            task, answer = parse_prompt(prompt)[0], solve(prompt)
            if kind == "sft":
                records.append({"prompt": prompt, "completion": answer, "task": task})
            elif kind == "prompt":
                records.append({"prompt": prompt, "reference": answer, "task": task})
            elif kind == "preference":
                records.append({"prompt": prompt, "chosen": answer,
                                "rejected": corrupt(prompt, answer, rng)})
            else:
                records.append({"text": f"{prompt} = {answer}"})
        files[name] = records
    exclude = set(seen)  # every prompt of every other file
    for split in ("eval", "train"):
        files[f"text.{split}"] = make_clean_text(seed, split, sizes[f"text.{split}"], exclude, random_prompt)
        exclude |= {r["text"] for r in files[f"text.{split}"] if is_task_prompt(r["text"])}
    return {name: files[name] for name in DEFAULT_SIZES if name in files}


def write_builtin_data(out_dir, seed: int = 0, sizes: dict[str, int] | None = None) -> dict[str, Path]:
    """Write `OUT/<kind>.<split>.jsonl` for every built-in file; returns name -> path."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(out_dir, "exists and is not a directory")
    paths = {}
    for name, records in make_builtin_data(seed, sizes).items():
        path = out_dir / f"{name}.jsonl"
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        atomic_write_text(path, text)
        paths[name] = path
    return paths
