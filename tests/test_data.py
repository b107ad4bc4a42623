import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.constants import IGNORE_INDEX
from shared.data import (build_attention_mask, collate, encode_prompt, encode_sft, encode_text,
                         length_bucketed_batches, load_any, load_jsonl, mask_tokens, pad,
                         shuffled_batches)
from shared.errors import DataError

I = IGNORE_INDEX


# ----------------------------------------------------------------------------- loading

def write_lines(path, lines, mode="w"):
    if mode == "wb":
        path.write_bytes(b"".join(lines))
    else:
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


GOOD = json.dumps({"prompt": "p", "completion": "c"})


@pytest.mark.parametrize("lines,where,message", [
    ([GOOD, "{bad json"], ":2: ", "invalid JSON"),
    ([GOOD, GOOD, json.dumps({"prompt": "p"})], ":3: field 'completion': ", "missing"),
    ([json.dumps({"prompt": 3, "completion": "c"})], ":1: field 'prompt': ", "must be a string, got int"),
    ([json.dumps({"prompt": "p", "completion": "  "})], ":1: field 'completion': ", "is empty"),
    ([json.dumps({"prompt": "p", "completion": "c", "score": 1})], ":1: field 'score': ",
     "unexpected field for a 'sft' record"),
    ([json.dumps({"prompt": "p", "completion": "c", "task": 5})], ":1: field 'task': ",
     "must be a string, got int"),
    ([GOOD, "[1, 2]"], ":2: ", "expected a JSON object, got list"),
    ([GOOD, "", "   ", "null"], ":4: ", "expected a JSON object, got NoneType"),
])
def test_bad_sft_lines_name_path_line_and_field(tmp_path, lines, where, message):
    path = write_lines(tmp_path / "data.jsonl", lines)
    with pytest.raises(DataError) as info:
        load_jsonl(path, "sft")
    assert str(info.value).startswith(f"{path}{where}"), str(info.value)
    assert message in str(info.value)


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = write_lines(tmp_path / "data.jsonl", [GOOD.encode() + b"\n", b'{"text": "caf\xe9"}\n'],
                       mode="wb")
    with pytest.raises(DataError, match=rf"^{path}:2: not UTF-8 text"):
        load_jsonl(path, "sft")


@pytest.mark.parametrize("make,message", [
    (lambda p: p, "no such file"),
    (lambda p: (p.mkdir(), p)[1], "is a directory, expected a file"),
    (lambda p: (p.write_text(""), p)[1], "empty file (no records)"),
    (lambda p: (p.write_text("\n  \n"), p)[1], "empty file (no records)"),
])
def test_bad_files(tmp_path, make, message):
    path = make(tmp_path / "data.jsonl")
    with pytest.raises(DataError) as info:
        load_jsonl(path, "text")
    assert str(info.value) == f"{path}: {message}"


@pytest.mark.parametrize("kind,record,expected", [
    ("text", {"text": "hi"}, {"text": "hi"}),
    ("sft", {"prompt": "p", "completion": "c"}, {"prompt": "p", "completion": "c", "task": None}),
    ("prompt", {"prompt": "p", "task": "add"}, {"prompt": "p", "reference": None, "task": "add"}),
    ("preference", {"prompt": "p", "chosen": "a", "rejected": "b"},
     {"prompt": "p", "chosen": "a", "rejected": "b"}),
])
def test_each_kind_loads(tmp_path, kind, record, expected):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps(record), "", json.dumps(record)])
    assert load_jsonl(path, kind) == [expected, expected]
    assert load_any(path) == (kind, [expected, expected])


def test_plain_text_files_are_text_records(tmp_path):
    path = tmp_path / "wiki.train.txt"
    path.write_text(" = Title = \n\n A paragraph .\n", encoding="utf-8")
    assert load_jsonl(path, "text") == [{"text": " = Title = "}, {"text": " A paragraph ."}]
    with pytest.raises(DataError, match="can only hold 'text' records"):
        load_jsonl(path, "sft")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_loader_fuzz_never_crashes_with_anything_but_a_data_error(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("fuzz") / "f.jsonl"
    path.write_bytes(blob)
    try:
        records = load_jsonl(path, "prompt")
    except DataError as e:
        assert str(e).startswith(str(path))
    else:
        assert records and all(isinstance(r["prompt"], str) and r["prompt"].strip() for r in records)


# ----------------------------------------------------------------------------- encoding

def test_completion_only_labels(tokenizer):
    prompt_ids = tokenizer.encode("reverse: a b c", add_special_tokens=False)
    completion_ids = tokenizer.encode("c b a", add_special_tokens=False)
    ids, labels, truncated = encode_sft(tokenizer, "reverse: a b c", "c b a", max_length=64)
    assert ids == [2] + prompt_ids + [3] + completion_ids + [3]
    assert labels == [I] * (len(prompt_ids) + 2) + completion_ids + [3]
    assert not truncated


def test_long_prompt_loses_its_start(tokenizer):
    completion_ids = tokenizer.encode("x", add_special_tokens=False)
    prompt_ids = tokenizer.encode("copy: a b c d e f g h", add_special_tokens=False)
    max_length = 3 + len(completion_ids) + 2
    ids, labels, truncated = encode_sft(tokenizer, "copy: a b c d e f g h", "x", max_length)
    assert truncated and len(ids) == max_length
    assert ids == [2] + prompt_ids[-2:] + [3] + completion_ids + [3]
    assert labels[-len(completion_ids) - 1:] == completion_ids + [3]


def test_too_long_completion_is_cut_without_its_stop_token(tokenizer):
    ids, labels, truncated = encode_sft(tokenizer, "copy: a", "a b c d e f g h i j", max_length=6)
    assert truncated and len(ids) == 6
    assert ids[:2] == [2, 3] and 3 not in ids[2:]
    assert labels == [I, I] + ids[2:]


def test_encode_prompt_and_text(tokenizer):
    ids, truncated = encode_prompt(tokenizer, "add: 1 + 2", max_length=64)
    assert ids == tokenizer.encode("add: 1 + 2") and not truncated
    ids, truncated = encode_prompt(tokenizer, "add: 1 + 2", max_length=4)
    assert truncated and ids == [2] + tokenizer.encode("add: 1 + 2", add_special_tokens=False)[-2:] + [3]
    ids, truncated = encode_text(tokenizer, "copy: a b = a b", max_length=5)
    assert truncated and len(ids) == 5 and ids[0] == 2 and ids[-1] == 3


# ----------------------------------------------------------------------------- batching

def test_pad_and_collate_by_hand():
    batch = collate([[5, 6, 7], [8]], pad_id=0, labels=[[I, 6, 7], [8]])
    np.testing.assert_array_equal(batch["input_ids"], [[5, 6, 7], [8, 0, 0]])
    np.testing.assert_array_equal(batch["attention_mask"], [[1, 1, 1], [1, 0, 0]])
    np.testing.assert_array_equal(batch["labels"], [[I, 6, 7], [8, I, I]])
    assert batch["input_ids"].dtype == np.int64
    left = collate([[5, 6, 7], [8]], pad_id=0, side="left")
    np.testing.assert_array_equal(left["input_ids"], [[5, 6, 7], [0, 0, 8]])
    np.testing.assert_array_equal(left["attention_mask"], [[1, 1, 1], [0, 0, 1]])
    np.testing.assert_array_equal(pad([[1]], 9, length=3), [[1, 9, 9]])
    with pytest.raises(ValueError):
        pad([[1, 2, 3]], 0, length=2)


def test_attention_mask_by_hand():
    attention_mask = np.array([[1, 1, 1], [1, 1, 0]])
    bidirectional = build_attention_mask(attention_mask, causal=False)
    assert bidirectional.shape == (2, 1, 3, 3) and bidirectional.dtype == bool
    np.testing.assert_array_equal(bidirectional[1, 0], [[1, 1, 0], [1, 1, 0], [1, 1, 0]])
    np.testing.assert_array_equal(bidirectional[0, 0], np.ones((3, 3)))
    causal = build_attention_mask(attention_mask, causal=True)
    np.testing.assert_array_equal(causal[0, 0], [[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    np.testing.assert_array_equal(causal[1, 0], [[1, 0, 0], [1, 1, 0], [1, 1, 0]])
    # Decoding with a cache: one query, the last position, sees every real key before it.
    step = build_attention_mask(np.array([[0, 1, 1, 1]]), causal=True, query_length=1)
    np.testing.assert_array_equal(step[0, 0], [[0, 1, 1, 1]])
    two = build_attention_mask(np.array([[1, 1, 1, 1]]), causal=True, query_length=2)
    np.testing.assert_array_equal(two[0, 0], [[1, 1, 1, 0], [1, 1, 1, 1]])


def test_length_buckets_cover_every_index_once_and_cut_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 60, size=1000)
    batches = length_bucketed_batches(lengths, batch_size=16, rng=np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert all(len(b) <= 16 for b in batches)

    def padded_tokens(batches):
        return sum(len(b) * lengths[b].max() for b in batches)

    plain = shuffled_batches(1000, 16, np.random.default_rng(1))
    assert sorted(np.concatenate(plain).tolist()) == list(range(1000))
    assert padded_tokens(batches) < 0.8 * padded_tokens(plain)
    again = length_bucketed_batches(lengths, batch_size=16, rng=np.random.default_rng(1))
    assert all((a == b).all() for a, b in zip(batches, again))


def test_mask_tokens_follows_80_10_10():
    rng = np.random.default_rng(0)
    input_ids = rng.integers(5, 100, size=(200, 100))
    input_ids[:, 0], input_ids[:, -1] = 2, 3   # [CLS] ... [SEP]
    attention_mask = np.ones_like(input_ids)
    attention_mask[:, 90:] = 0                  # padding is never masked
    masked, labels = mask_tokens(input_ids, attention_mask, special_ids={0, 1, 2, 3, 4},
                                 mask_id=4, vocab_size=100, rng=np.random.default_rng(1))
    chosen = labels != I
    eligible = 200 * 88
    assert not chosen[:, 0].any() and not chosen[:, 90:].any()
    assert abs(chosen.sum() / eligible - 0.15) < 0.01
    np.testing.assert_array_equal(labels[chosen], input_ids[chosen])
    np.testing.assert_array_equal(masked[~chosen], input_ids[~chosen])
    share_mask = (masked[chosen] == 4).mean()
    share_same = (masked[chosen] == input_ids[chosen]).mean()
    assert abs(share_mask - 0.8) < 0.02
    assert abs(share_same - 0.1) < 0.02  # (random replacements can hit the same id: ~1% more)
    again, _ = mask_tokens(input_ids, attention_mask, {0, 1, 2, 3, 4}, 4, 100,
                           np.random.default_rng(1))
    np.testing.assert_array_equal(again, masked)
