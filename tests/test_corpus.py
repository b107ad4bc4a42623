"""The clean pretraining corpus (`text.*`) holds no solved task instance; the contaminated one
(`text_contaminated.*`, the old `text.*`) is nothing else; the task files are as they were.

The solver here is written again, on purpose: it imports nothing from shared.tasks or
shared.corpus but the generator under test, so a bug in their solving cannot hide itself.
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from shared import corpus, tasks
from shared.corpus import make_clean_text, solved_instance
from shared.tasks import DEFAULT_SIZES, make_builtin_data, random_prompt

TASK_WORDS = ("copy", "reverse", "sort", "add")
SHORTEST, LONGEST = 3, 6  # the built-in tasks' list lengths

# sha256 (first 16 hex digits) of every file the generator wrote before the clean corpus
# (`git show 9438611:shared/tasks.py`), its `text.*` being today's `text_contaminated.*`;
# SMALL are tests/conftest.py's sizes.
SMALL = {"sft.train": 80, "sft.eval": 20, "prompt.train": 80, "prompt.eval": 20,
         "preference.train": 40, "preference.eval": 10, "text.train": 80, "text.eval": 10}
BEFORE = {
    (0, "default"): {"sft.train": "4903ca1c682e5c24", "sft.eval": "0b4b13151e421df7",
                     "prompt.train": "d374b655c3bee967", "prompt.eval": "a584eadd759bd1ce",
                     "preference.train": "4b8c32707b4e85ea", "preference.eval": "4a475966d3bcb468",
                     "text_contaminated.train": "bd537c2818f27a31", "text_contaminated.eval": "89779ff67948a638"},
    (1, "default"): {"sft.train": "14f8c3073a22bca3", "sft.eval": "d551563c6766de84",
                     "prompt.train": "6a95469464bde7d5", "prompt.eval": "38e5bbf5f9fd4021",
                     "preference.train": "9e58048fdd9f3154", "preference.eval": "2c159a2adfd10c22",
                     "text_contaminated.train": "6d67c9125857d6ad", "text_contaminated.eval": "74a9762394fe0801"},
    (0, "small"): {"sft.train": "35b43f0ed4f42292", "sft.eval": "985485ba05b68e8e",
                   "prompt.train": "ef26d08de005994d", "prompt.eval": "d574f494da0b72a6",
                   "preference.train": "4d692bd1cf8d0606", "preference.eval": "27e2cfe124c54bae",
                   "text_contaminated.train": "7ed41477d70c3279", "text_contaminated.eval": "2326d001a9fab881"},
}


@pytest.fixture(scope="module")
def default_data():
    return {seed: make_builtin_data(seed=seed) for seed in (0, 1)}


def digest(records) -> str:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- an independent solver

def items_of(line: str) -> list[str]:
    for symbol in ":+=,":
        line = line.replace(symbol, f" {symbol} ")
    return line.lower().split()


def contains(haystack: list[str], needle: list[str]) -> bool:
    k = len(needle)
    return any(haystack[i:i + k] == needle for i in range(len(haystack) - k + 1))


def task_instances(line: str):
    """Every task word followed by its items whose answer stands elsewhere in the line."""
    items = items_of(line)
    for at, word in enumerate(items):
        if word not in TASK_WORDS:
            continue
        start = at + 1 + (at + 1 < len(items) and items[at + 1] == ":")
        before = items[:at]
        if word == "add":
            numbers = [t for t in items[start:start + 3] if t != "+"]
            if len(numbers) == 2 and all(t.isdigit() for t in numbers):
                total = str(int(numbers[0]) + int(numbers[1]))
                if total in before or total in items[start + 3:]:
                    yield f"{line!r}: add {numbers} -> {total}"
            continue
        run = start
        while run < len(items) and len(items[run]) == 1 and items[run].isalpha():
            run += 1
        for n in range(SHORTEST, run - start + 1):  # the items may run on into the answer
            args = items[start:start + n]
            answer = {"copy": args, "reverse": args[::-1], "sort": sorted(args)}[word]
            if contains(before, answer) or contains(items[start + n:], answer):
                yield f"{line!r}: {word} {args} -> {answer}"


def generic_instances(line: str):
    """Runs of the tasks' lengths repeated, reversed or sorted elsewhere in the line (its items,
    then its letters and digits one by one), and three numbers with a + b = c."""
    for seq in (items_of(line), [c for c in line.lower() if c.isalnum()]):
        for k in range(SHORTEST, LONGEST + 1):
            where: dict[tuple, list[int]] = {}
            for i in range(len(seq) - k + 1):
                where.setdefault(tuple(seq[i:i + k]), []).append(i)
            for i in range(len(seq) - k + 1):
                x = seq[i:i + k]
                for form in (x, x[::-1], sorted(x)):
                    if any(abs(j - i) >= k for j in where.get(tuple(form), ())):
                        yield f"{line!r}: {x} and {form}"
    numbers = [int(t) for t in items_of(line) if t.isdigit()]
    yield from (f"{line!r}: {a} + {b} = {c}" for i, a in enumerate(numbers) for j, b in enumerate(numbers)
                for k, c in enumerate(numbers) if len({i, j, k}) == 3 and a + b == c)


def first(instances):
    return next(instances, None)


def is_prompt(line: str) -> bool:
    return bool(re.fullmatch(r"(copy|reverse|sort): [a-z]( [a-z])*|add: \d+ \+ \d+", line))


# ----------------------------------------------------------------------------- the tests

@pytest.mark.parametrize("line", ["copy: k d a m = k d a m", "reverse k d a m gives m a d k",
                                  "a d k m is k d a m sorted", "sort: kdam adkm", "kdam madk",
                                  "47 + 385 = 432", "432 is 47 and 385", "add: 3 + 4 , 7"])
def test_both_checkers_catch_a_solved_instance_in_any_layout(line):
    assert solved_instance(line) is not None
    assert first(generic_instances(line))


@pytest.mark.parametrize("line", ["sort the cards by colour", "sort: k d a m", "add: 47 + 385",
                                  "page 47 of 385", "reverse: a b c b a"])
def test_lines_without_an_answer_pass(line):
    assert solved_instance(line) is None
    assert first(generic_instances(line)) is None and first(task_instances(line)) is None


@pytest.mark.parametrize("seed,sizes", [(0, "default"), (1, "default"), (0, "small")])
def test_task_files_and_the_contaminated_text_are_the_old_files(seed, sizes, default_data):
    data = default_data[seed] if sizes == "default" else make_builtin_data(seed=seed, sizes=SMALL)
    assert {name: digest(data[name]) for name in BEFORE[(seed, sizes)]} == BEFORE[(seed, sizes)]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_clean_corpus_holds_no_solved_instance(seed, default_data):
    data = default_data[seed]
    for name in ("text.train", "text.eval"):
        assert len(data[name]) == DEFAULT_SIZES[name]
        found = [f for r in data[name] for f in (*task_instances(r["text"]), *generic_instances(r["text"]))]
        assert found == [], f"{name}: {len(found)} solved instances, e.g. {found[:3]}"


@pytest.mark.parametrize("seed", [0, 1])
def test_the_checker_finds_every_contaminated_line(seed, default_data):
    """Each half of the solver alone flags every 'prompt = answer' line: it can fail."""
    for name in ("text_contaminated.train", "text_contaminated.eval"):
        lines = [r["text"] for r in default_data[seed][name]]
        assert len(lines) == DEFAULT_SIZES[name]
        assert all(" = " in line for line in lines)
        assert [line for line in lines if first(task_instances(line)) is None] == []
        assert [line for line in lines if first(generic_instances(line)) is None] == []


@pytest.mark.parametrize("seed", [0, 1])
def test_clean_prompts_are_no_prompt_of_another_file(seed, default_data):
    data = default_data[seed]
    others = {r["prompt"] for name in data if not name.startswith("text") for r in data[name]}
    others |= {r["text"].split(" = ")[0] for name in ("text_contaminated.train", "text_contaminated.eval")
               for r in data[name]}
    assert len(others) == sum(DEFAULT_SIZES[n] for n in DEFAULT_SIZES if not n.startswith("text."))
    prompts = {name: [r["text"] for r in data[name] if is_prompt(r["text"])] for name in ("text.train", "text.eval")}
    assert not set(prompts["text.train"] + prompts["text.eval"]) & others
    assert not set(prompts["text.train"]) & set(prompts["text.eval"])
    # the kinds of line the module promises, in roughly its shares
    lines = [r["text"] for r in data["text.train"]]
    assert 0.35 < len(prompts["text.train"]) / len(lines) < 0.45
    for word in TASK_WORDS:  # in a sentence: the word, then no ':'
        assert any(re.match(rf"(.* )?{word} [a-z]{{2,}}", line) for line in lines), word
    for symbol in (":", "+", "="):
        assert any(symbol in line and not is_prompt(line) for line in lines), symbol


def test_clean_eval_changes_with_training_sizes_only_where_a_prompt_collides(default_data):
    alone = [r["text"] for r in make_clean_text(0, "eval", 200, set(), random_prompt)]
    small = make_builtin_data(seed=0, sizes={"sft.train": 10, "prompt.train": 10, "preference.train": 3000})
    for data in (default_data[0], small):
        others = {r["prompt"] for name in data if not name.startswith("text") for r in data[name]}
        others |= {r["text"].split(" = ")[0] for r in data["text_contaminated.train"] + data["text_contaminated.eval"]}
        lines = [r["text"] for r in data["text.eval"]]
        assert [a for a, b in zip(alone, lines) if a != b and a not in others] == []
        assert sum(a == b for a, b in zip(alone, lines)) >= 190  # collisions are rare


def test_contaminated_sizes_follow_the_text_sizes():
    data = make_builtin_data(seed=2, sizes={"text.train": 30, "text.eval": 5, "text_contaminated.eval": 7})
    assert [len(data[n]) for n in ("text.train", "text.eval", "text_contaminated.train", "text_contaminated.eval")] \
        == [30, 5, 30, 7]


def test_the_corpus_draws_the_tasks_symbols_and_numbers():
    assert (corpus.LETTERS, corpus.MAX_NUMBER) == (tasks.SYMBOLS, tasks.MAX_ADDEND)
