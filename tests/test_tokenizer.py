
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shared.constants import SPECIAL_TOKENS
from shared.errors import ConfigError, DataError
from shared.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")

SAMPLES = ["reverse: k d a m", "add: 47 + 385", "héllo, wörld!  tabs\tand\nnewlines",
           "日本語のテキスト", "emoji 🙂 and ZWJ 👩‍💻", "", " leading and trailing "]


def test_special_token_ids(tokenizer):
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id,
            tokenizer.mask_id) == (0, 1, 2, 3, 4)
    assert tokenizer.vocab_size == len(tokenizer.backend.get_vocab()) <= 300


def test_encode_adds_cls_and_sep(tokenizer):
    ids = tokenizer.encode("copy: a b")
    assert ids[0] == tokenizer.cls_id and ids[-1] == tokenizer.sep_id
    assert ids[1:-1] == tokenizer.encode("copy: a b", add_special_tokens=False)
    pair = tokenizer.encode("copy: a b", "a b")
    body_a = tokenizer.encode("copy: a b", add_special_tokens=False)
    body_b = tokenizer.encode("a b", add_special_tokens=False)
    assert pair == [2] + body_a + [3] + body_b + [3]


def test_save_load_gives_identical_encodings(tokenizer, tmp_path):
    tokenizer.save(tmp_path / "tokenizer.json")
    loaded = Tokenizer.load(tmp_path)  # a directory holding tokenizer.json works too
    for text in SAMPLES:
        assert loaded.encode(text) == tokenizer.encode(text)
    assert loaded.vocab_size == tokenizer.vocab_size


def test_transformers_fast_tokenizer_encodes_identically(tokenizer, tmp_path, builtin_data):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(path)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path))
    texts = SAMPLES + [r["prompt"] for r in builtin_data["sft.eval"]]
    for text in texts:
        assert fast(text)["input_ids"] == tokenizer.encode(text)
        assert fast.decode(tokenizer.encode(text), skip_special_tokens=True) == tokenizer.decode(
            tokenizer.encode(text))
    record = builtin_data["sft.eval"][0]
    assert fast(record["prompt"], record["completion"])["input_ids"] == tokenizer.encode(
        record["prompt"], record["completion"])


def test_training_is_deterministic(builtin_data):
    texts = [r["text"] for r in builtin_data["text.train"]]
    a = Tokenizer.train(texts, vocab_size=300).backend.to_str()
    b = Tokenizer.train(texts, vocab_size=300).backend.to_str()
    assert a == b


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_decode_encode_round_trips_normalized_text(tokenizer, text):
    # Literal special-token strings in the text are read as special tokens (as in Hugging Face).
    assume(not any(t in text for t in SPECIAL_TOKENS))
    assert tokenizer.decode(tokenizer.encode(text)) == tokenizer.normalize(text)


def test_normalize_is_nfc(tokenizer):
    assert tokenizer.normalize("e\u0301") == "\u00e9"
    assert tokenizer.encode("e\u0301") == tokenizer.encode("\u00e9")


def test_vocab_size_below_byte_alphabet_is_rejected():
    with pytest.raises(ConfigError, match="vocab_size: must be an integer >= 261"):
        Tokenizer.train(["abc"], vocab_size=100)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="missing.json: no such tokenizer file"):
        Tokenizer.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{\"not\": \"a tokenizer\"}")
    with pytest.raises(DataError, match="bad.json: not a valid tokenizer.json"):
        Tokenizer.load(bad)


def test_load_a_bert_wordpiece_tokenizer(tmp_path):
    from tokenizers import Tokenizer as Backend
    from tokenizers import models, normalizers, pre_tokenizers

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello",
                                          "world", "##s"])}
    backend = Backend(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    backend.save(str(tmp_path / "tokenizer.json"))
    loaded = Tokenizer.load(tmp_path / "tokenizer.json")
    assert loaded.encode("Hello worlds xyz", add_special_tokens=False) == [5, 6, 7, 1]
    assert loaded.mask_id == 4


def test_tokenizer_without_special_tokens_is_rejected(tmp_path):
    from tokenizers import Tokenizer as Backend
    from tokenizers import models

    Backend(models.WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>")).save(str(tmp_path / "t.json"))
    with pytest.raises(DataError, match=r"t.json: tokenizer lacks the special token\(s\) \[PAD\]"):
        Tokenizer.load(tmp_path / "t.json")
