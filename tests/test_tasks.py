import hashlib
import random

import pytest

from shared.tasks import (DEFAULT_SIZES, TASKS, corrupt, exact_match, make_builtin_data,
                          partial_credit, score, solve, write_builtin_data)


@pytest.mark.parametrize("prompt,answer", [
    ("copy: k d a m", "k d a m"),
    ("reverse: k d a m", "m a d k"),
    ("sort: k d a m", "a d k m"),
    ("sort: b a b", "a b b"),
    ("add: 47 + 385", "432"),
    ("add: 0 + 0", "0"),
    ("add: 999 + 999", "1998"),
])
def test_solve(prompt, answer):
    assert solve(prompt) == answer
    assert exact_match(prompt, answer) == 1.0
    assert exact_match(prompt, f"  {answer} ") == 1.0
    assert partial_credit(prompt, answer) == 1.0


@pytest.mark.parametrize("prompt,completion,partial", [
    ("reverse: k d a m", "m a k d", 0.5),       # first two right
    ("reverse: k d a m", "m a d", 0.75),        # one missing: 3 of max(4, 3)
    ("reverse: k d a m", "m a d k k k", 4 / 6),  # extras cost credit: 4 of max(4, 6)
    ("sort: c b a", "", 0.0),
    ("copy: a b c", "x y z", 0.0),
    ("add: 47 + 385", "442", 2 / 3),            # 432: units and hundreds right
    ("add: 47 + 385", "32", 2 / 3),             # aligned from the right: 2 of max(3, 2)
    ("add: 5 + 5", "1 0", 1 / 3),               # "1 0" is not "10": a space is a wrong digit
])
def test_partial_credit_by_hand(prompt, completion, partial):
    assert partial_credit(prompt, completion) == pytest.approx(partial)
    assert exact_match(prompt, completion) == float(partial == 1.0)
    assert score(prompt, completion, partial=True) == pytest.approx(partial)
    assert score(prompt, completion, partial=False) == exact_match(prompt, completion)


@pytest.mark.parametrize("prompt", ["translate: a b", "copy:", "add: 1 + x", "no colon"])
def test_unknown_or_malformed_prompts_are_rejected(prompt):
    with pytest.raises(ValueError):
        solve(prompt)


def test_corruptions_are_wrong_answers():
    rng = random.Random(0)
    data = make_builtin_data(seed=3, sizes={"preference.train": 400})
    for record in data["preference.train"]:
        assert record["chosen"] == solve(record["prompt"])
        assert record["rejected"] != record["chosen"]
        assert exact_match(record["prompt"], record["rejected"]) == 0.0
    assert corrupt("add: 0 + 0", "0", rng) != "0"


def test_same_seed_gives_byte_identical_files(tmp_path):
    def digests(out, seed=5):
        paths = write_builtin_data(out, seed=seed)
        return {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in paths.items()}

    first, second = digests(tmp_path / "a"), digests(tmp_path / "b")
    assert first == second
    assert set(first) == set(DEFAULT_SIZES)
    assert digests(tmp_path / "c") == first
    other = digests(tmp_path / "d", seed=6)
    assert all(other[name] != first[name] for name in first)


def test_builtin_data_sizes_balance_and_disjointness():
    data = make_builtin_data(seed=0)
    assert {name: len(records) for name, records in data.items()} == DEFAULT_SIZES
    prompts = {}
    for name, records in data.items():
        if name.startswith("text."):
            continue  # the clean corpus has no prompt field: tests/test_corpus.py
        if name.startswith("text_contaminated"):
            names = [r["text"].split(" = ")[0] for r in records]
        else:
            names = [r["prompt"] for r in records]
        prompts[name] = set(names)
        assert len(prompts[name]) == len(records), f"duplicate prompt in {name}"
    names = list(prompts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not prompts[a] & prompts[b], f"{a} and {b} share prompts"
    tasks = [r["task"] for r in data["sft.train"]]
    assert {t: tasks.count(t) for t in TASKS} == {t: 100 for t in TASKS}
    for record in data["sft.train"] + data["sft.eval"]:
        assert record["completion"] == solve(record["prompt"])
    for record in data["prompt.eval"]:
        assert record["reference"] == solve(record["prompt"])
        assert record["task"] == record["prompt"].split(":")[0]


def test_eval_splits_do_not_depend_on_training_sizes():
    """(The clean text.eval may differ on a line whose drawn prompt a training file holds: it is
    redrawn; tests/test_corpus.py checks that it differs nowhere else.)"""
    small = make_builtin_data(seed=0, sizes={"sft.train": 10, "prompt.train": 10})
    full = make_builtin_data(seed=0)
    for name in ("sft.eval", "prompt.eval", "preference.eval", "text_contaminated.eval"):
        assert small[name] == full[name]
