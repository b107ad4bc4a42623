"""The clean pretraining corpus (`text.train`, `text.eval`): text over the tasks' symbols that
holds no solved instance of any built-in task.

Pretraining on "prompt = answer" lines (kept as `text_contaminated.*`) is training on labelled
data; this corpus is what real pretraining text is to a downstream task: the same vocabulary,
questions without their answers, and the task words used for other things. One line each of:

* prompt    an unanswered task prompt, `sort: k d a m`, `add: 47 + 385`, drawn as the task
            files draw theirs: the input format without its solution. Never a prompt of another
            built-in file (the eval splits above all), so no held-out input is seen in pretraining.
* letters   a random letter sequence, bare (`q z b f k m t`) or after a label that is not a task
            word (`keys: q z b`): the items' statistics with no task relation between them.
* numbers   numbers that are not a sum (`page 47 of 385`, `47 , 385 , 12`, `k = 47`,
            `12 + 30 + 7`): digits, ':', '+' and '=' without an addition's result.
* sentence  the task words in other senses (`sort the cards by colour`, `add salt to the soup`,
            `the reverse side of card 12 is blank`), each word once in a line.

Excluded, by construction and by a check (`solved_instance`) that rejects a drawn line and draws
again: any run of >= 3 items followed or preceded (not overlapping) by the same run, its
reverse or its sorted form -- items being the line's words, letters, numbers and symbols, and
again its letters and digits one character each, so `kdam madk` counts as well as
`k d a m = m a d k` -- and any three numbers a, b, c at three places with a + b = c. These are
copy, reverse, sort and add in every layout, with or without the task word.

Each split is its own index of the stream `pretraining_text`, and each line its own
`random.Random` seeded from it: a line changes only when one of its draws is a prompt that
another file holds (which depends on that file's size).
"""

from __future__ import annotations

import random
import re
import string
from typing import Callable

from shared.random_streams import seed_sequence

SPLITS = ("eval", "train")                 # the stream's index: eval first, as the task files
KINDS = ("prompt", "letters", "numbers", "sentence")
KIND_WEIGHTS = (0.4, 0.2, 0.2, 0.2)        # unanswered prompts most: the format the tasks share
MIN_LETTERS, MAX_LETTERS = 3, 12
MAX_TRIES = 1000                           # draws of one line before a template is a bug
LETTERS = string.ascii_lowercase           # the tasks' symbols (shared.tasks.SYMBOLS)
MAX_NUMBER = 999                           # as the add task's addends (shared.tasks.MAX_ADDEND)

LABELS = ("keys", "letters", "row", "code", "list", "set", "word", "tags")
NUMBER_TEMPLATES = (
    "page {a} of {b}", "{a} , {b} , {c}", "{a} , {b} , {c} , {d}", "flat {a} , level {b}",
    "{l} = {a}", "{l} = {a} and {m} = {b}", "{a} + {b} + {c}", "year {a}", "bus {a} leaves at {b}",
    "box {a} : {b} kg", "item {a} costs {b}", "{a} people and {b} chairs",
)
SENTENCES = (  # each task word at most once per line: a repeated word is a repeated run
    "copy my notes from the board", "please copy page {a} of the book", "make a copy of letter {l}",
    "she kept a copy in box {a}", "copy: {a} pages left to print", "copy {l} into your log",
    "reverse the car into a yard", "the reverse side of card {a} is blank",
    "read the list in reverse", "reverse gear is on the left", "reverse: a turn back",
    "sort the cards by colour", "what sort of tree is it", "sort: apples first , pears next",
    "sort the mail by noon", "we sort {a} parcels a day", "they are a good sort",
    "add salt to the soup", "add a note to page {a}", "add: one more chair",
    "add milk and stir", "add {a} grams of flour", "add your name on line {l}",
)


# ----------------------------------------------------------------------------- the check

_TOKEN = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")


def tokens(line: str) -> list[str]:
    """The items of a line: words, numbers and single symbols (`copy: k d` -> copy : k d)."""
    return _TOKEN.findall(line.lower())


def repeated_run(items) -> str | None:
    """A run of >= 3 items with the same run, its reverse or its sorted form elsewhere in `items`
    (not overlapping it), described; None if there is none."""
    n = len(items)
    # Same and reversed runs: a match of length k >= 3 holds one of length 3 (a reversed one
    # pairs X's first three with Y's last three), so runs of 3 are enough.
    starts: dict[tuple, list[int]] = {}
    for i in range(n - 2):
        starts.setdefault(tuple(items[i:i + 3]), []).append(i)
    for run, where in starts.items():
        for i in where:
            for j in starts.get(run, ()):
                if j >= i + 3:
                    return f"run {' '.join(run)} repeated"
            for j in starts.get(run[::-1], ()):
                if abs(j - i) >= 3:
                    return f"run {' '.join(run)} and its reverse"
    # Sorted runs: Y == sorted(X) needs Y non-decreasing, so only those Y are tried, all lengths.
    for j in range(n - 2):
        k = 1
        while j + k < n and items[j + k - 1] <= items[j + k]:
            k += 1
            if k >= 3:
                y = list(items[j:j + k])
                for i in range(n - k + 1):
                    if abs(i - j) >= k and sorted(items[i:i + k]) == y:
                        return f"run {' '.join(items[i:i + k])} and its sorted form"
    return None


def three_term_sum(numbers) -> str | None:
    """Three numbers at three places with a + b = c, described; None if there are none."""
    for i, a in enumerate(numbers):
        for j, b in enumerate(numbers):
            if j > i:
                for k, c in enumerate(numbers):
                    if k != i and k != j and a + b == c:
                        return f"{a} + {b} = {c}"
    return None


def solved_instance(line: str) -> str | None:
    """Why `line` may hold a task input with its answer (copy, reverse, sort or add, in any
    layout), or None if it cannot."""
    items = tokens(line)
    characters = [c for c in line.lower() if c.isalnum()]
    numbers = [int(t) for t in items if t.isdigit()]
    return repeated_run(items) or repeated_run(characters) or three_term_sum(numbers)


# ----------------------------------------------------------------------------- generation

def _number(rng: random.Random) -> int:
    """A number as the add task's are, or a small one as in everyday text."""
    return rng.randint(0, MAX_NUMBER) if rng.random() < 0.5 else rng.randint(1, 60)


def _fill(template: str, rng: random.Random) -> str:
    values = {"a": _number(rng), "b": _number(rng), "c": _number(rng), "d": _number(rng),
              "l": rng.choice(LETTERS), "m": rng.choice(LETTERS)}
    return template.format(**values)


def draw_line(kind: str, rng: random.Random, draw_prompt: Callable[[random.Random], str]) -> str:
    """One candidate line of a kind (not yet checked); `draw_prompt(rng)` draws a task prompt."""
    if kind == "prompt":
        return draw_prompt(rng)
    if kind == "letters":
        letters = " ".join(rng.choice(LETTERS) for _ in range(rng.randint(MIN_LETTERS, MAX_LETTERS)))
        return f"{rng.choice(LABELS)}: {letters}" if rng.random() < 0.3 else letters
    if kind == "numbers":
        return _fill(rng.choice(NUMBER_TEMPLATES), rng)
    if kind == "sentence":
        return _fill(rng.choice(SENTENCES), rng)
    raise ValueError(f"unknown line kind {kind!r}; known: {', '.join(KINDS)}")


def clean_line(rng: random.Random, exclude: set[str], draw_prompt) -> str:
    """A line of a random kind that passes `solved_instance` and is not in `exclude`."""
    kind = rng.choices(KINDS, KIND_WEIGHTS)[0]
    for _ in range(MAX_TRIES):
        line = draw_line(kind, rng, draw_prompt)
        if line not in exclude and solved_instance(line) is None:
            return line
    raise AssertionError(f"no clean {kind} line in {MAX_TRIES} draws")  # pragma: no cover


def make_clean_text(seed: int, split: str, count: int, exclude: set[str], draw_prompt) -> list[dict]:
    """`count` records `{"text": line}` of the split; no line is in `exclude` (the prompts of
    every other built-in file). `draw_prompt(rng)`: a task prompt as the task files draw them
    (shared.tasks.random_prompt, passed in: the tasks module imports this one)."""
    words = seed_sequence("pretraining_text", seed, SPLITS.index(split)).generate_state(count, "uint64")
    return [{"text": clean_line(random.Random(int(word)), exclude, draw_prompt)} for word in words]
