"""One tokenizer for both frameworks: a byte-level BPE model from the `tokenizers` library.

Byte-level BPE (as GPT-2 and RoBERTa) starts from the 256 byte values, so every string has an
encoding and `decode(encode(text)) == normalize(text)` holds with no [UNK]. Special tokens are
BERT's ([PAD] [UNK] [CLS] [SEP] [MASK], ids 0..4 when trained here) and a sequence is encoded as
`[CLS] text [SEP]`, or `[CLS] a [SEP] b [SEP]` for a pair, as BERT does.

The saved `tokenizer.json` is the library's own format, so
`transformers.PreTrainedTokenizerFast(tokenizer_file=path)` loads it and encodes identically.
`save_pretrained` also writes what `transformers.AutoTokenizer` and `pipeline` read in a model
folder (`tokenizer_config.json`, `special_tokens_map.json`, `generation_config.json`).
`Tokenizer.load` also reads the tokenizer of a downloaded model folder (a BERT WordPiece one, a
GPT-2, Llama or Qwen2 byte-level BPE one). The data code needs four roles -- a start token, a
separator/end token, a padding token, an unknown token -- and the masked-LM objective a fifth, the
mask token. A BERT tokenizer has them as [CLS] [SEP] [PAD] [UNK] [MASK]; a decoder's folder names
its own in `tokenizer_config.json` (bos_token, eos_token, pad_token, unk_token), and they fill
the roles: start = bos (else eos), separator = eos, pad = pad (else eos), unk = unk (else eos), no
mask. A completion then reads `<bos> prompt <eos> completion <eos>`. The folder's chat template
is not used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

from tokenizers import Tokenizer as _Backend
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from shared.constants import CLS_TOKEN, MASK_TOKEN, PAD_TOKEN, SEP_TOKEN, SPECIAL_TOKENS, UNK_TOKEN
from shared.errors import ConfigError, DataError
from shared.io import atomic_write_text

MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)  # the byte alphabet plus the special tokens


# The roles of the special tokens, and BERT's tokens for them (the tokenizers trained here).
ROLES = ("pad", "unk", "cls", "sep", "mask")
BERT_ROLES = dict(zip(ROLES, SPECIAL_TOKENS))


def roles_from_tokenizer_config(values: dict) -> dict:
    """A model folder's tokenizer_config.json -> {role: token}. BERT-style keys (cls_token,
    sep_token, mask_token) win; a decoder's bos/eos fill start and separator."""
    def token(key):
        value = values.get(key)
        return value.get("content") if isinstance(value, dict) else value
    eos = token("sep_token") or token("eos_token")
    roles = {"cls": token("cls_token") or token("bos_token") or eos, "sep": eos,
             "pad": token("pad_token") or eos, "unk": token("unk_token") or eos, "mask": token("mask_token")}
    return {role: t for role, t in roles.items() if t is not None}


class Tokenizer:
    """Thin wrapper that exposes the ids the models and data code need.

    roles: {role: token} for the special tokens (default BERT's five); "mask" may be absent.
    """

    def __init__(self, backend: _Backend, source: str = "<memory>", roles: dict | None = None,
                 tokenizer_class: str | None = None):
        self.backend = backend
        self.roles = dict(roles or BERT_ROLES)
        # The class `transformers.AutoTokenizer` builds from an exported folder: the source folder's
        # own, else one that reads tokenizer.json as it is. (transformers 5 ignores the generic
        # "PreTrainedTokenizerFast" for a decoder's model_type and rebuilds e.g. a Qwen2Tokenizer
        # from the vocabulary, with Qwen's pre-tokenizer, not this file's.)
        self.tokenizer_class = tokenizer_class or ("PreTrainedTokenizerFast" if roles is None else "TokenizersBackend")
        needed = [role for role in ROLES if role != "mask"]
        absent = [role for role in needed if role not in self.roles]
        if absent:
            raise DataError(source, f"tokenizer names no {', '.join(absent)} token")
        ids = {role: backend.token_to_id(token) for role, token in self.roles.items()}
        missing = [self.roles[role] for role, i in ids.items() if i is None]
        if missing:
            raise DataError(source, f"tokenizer lacks the special token(s) {', '.join(missing)}")
        self.pad_id = ids["pad"]
        self.unk_id = ids["unk"]
        self.cls_id = ids["cls"]
        self.sep_id = ids["sep"]
        self.mask_id = ids.get("mask")  # None: no masked-LM objective with this tokenizer
        self.special_ids = frozenset(ids.values())

    @property
    def is_bert_layout(self) -> bool:
        """The five BERT special tokens (a tokenizer trained here, or a BERT folder's)."""
        return self.roles == BERT_ROLES

    # ------------------------------------------------------------------ build, save, load

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> "Tokenizer":
        """Learn a byte-level BPE vocabulary of `vocab_size` tokens (special tokens included)."""
        if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
            raise ConfigError("vocab_size", f"must be an integer >= {MIN_VOCAB_SIZE} "
                              f"(256 bytes + {len(SPECIAL_TOKENS)} special tokens), got {vocab_size}")
        backend = _Backend(models.BPE(unk_token=UNK_TOKEN))
        backend.normalizer = normalizers.NFC()
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),  # ids 0..4, in this order
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        backend.train_from_iterator(list(texts), trainer=trainer)
        cls_id, sep_id = backend.token_to_id(CLS_TOKEN), backend.token_to_id(SEP_TOKEN)
        backend.post_processor = processors.TemplateProcessing(
            single=f"{CLS_TOKEN} $A {SEP_TOKEN}",
            pair=f"{CLS_TOKEN} $A {SEP_TOKEN} $B:1 {SEP_TOKEN}:1",
            special_tokens=[(CLS_TOKEN, cls_id), (SEP_TOKEN, sep_id)],
        )
        return cls(backend)

    @classmethod
    def load(cls, path) -> "Tokenizer":
        """Read a `tokenizer.json` file, or the one inside a directory. A `tokenizer_config.json`
        beside it names the special tokens' roles (a decoder's folder); without one, or where it
        names BERT's tokens, they are BERT's."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.exists():
            raise DataError(path, "no such tokenizer file")
        try:
            backend = _Backend.from_file(str(path))
        except Exception as e:  # the Rust library raises plain Exceptions for every bad file
            first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataError(path, f"not a valid tokenizer.json ({first_line})") from None
        roles, tokenizer_class = None, None
        config_path = path.parent / "tokenizer_config.json"
        if config_path.exists() and backend.token_to_id(CLS_TOKEN) is None:
            try:
                values = json.loads(config_path.read_text(encoding="utf-8"))
                roles, tokenizer_class = roles_from_tokenizer_config(values), values.get("tokenizer_class")
            except (ValueError, AttributeError) as e:
                raise DataError(config_path, f"not a valid tokenizer_config.json ({e})") from None
        return cls(backend, source=str(path), roles=roles, tokenizer_class=tokenizer_class)

    def save(self, path) -> None:
        """Write `tokenizer.json` atomically (to `path`, or into it if it is a directory); a
        tokenizer with other roles than BERT's also writes the `tokenizer_config.json` naming them."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        atomic_write_text(path, self.backend.to_str(pretty=True))
        if not self.is_bert_layout:
            atomic_write_text(path.parent / "tokenizer_config.json",
                              json.dumps(self.tokenizer_config(None, generates=True), indent=2) + "\n")

    def special_tokens_map(self) -> dict:
        """The special tokens under the names `transformers` gives them."""
        if self.is_bert_layout:
            return {"pad_token": PAD_TOKEN, "unk_token": UNK_TOKEN, "cls_token": CLS_TOKEN, "sep_token": SEP_TOKEN,
                    "mask_token": MASK_TOKEN}
        tokens = {"bos_token": self.roles["cls"], "eos_token": self.roles["sep"], "pad_token": self.roles["pad"],
                  "unk_token": self.roles["unk"]}
        return tokens | ({"mask_token": self.roles["mask"]} if "mask" in self.roles else {})

    def tokenizer_config(self, model_max_length, generates: bool) -> dict:
        config = {"tokenizer_class": self.tokenizer_class, **self.special_tokens_map(),
                  "padding_side": "left" if generates else "right", "clean_up_tokenization_spaces": False}
        if not self.is_bert_layout:  # a decoder's tokenizer adds no [CLS]/[SEP]: the data code does
            config["add_bos_token"] = config["add_eos_token"] = False
        return config | ({"model_max_length": model_max_length} if model_max_length else {})

    def save_pretrained(self, directory, model_max_length: int, generates: bool) -> None:
        """Write the tokenizer files of a model folder, as `transformers` reads them.

        generates: the folder holds a model that generates (causal, with an LM head): batches are
        left-padded, as for generation, and a generation config is written; otherwise (masked LM,
        reward model) batches are right-padded, as the reward is read at the last real token.

        - tokenizer.json: the tokenizer itself.
        - tokenizer_config.json: names the fast tokenizer class and the special tokens. Without it
          `AutoTokenizer` goes by config.json's model_type ("bert"), builds a WordPiece
          `BertTokenizer` from the BPE vocabulary and encodes with the wrong ids. No clean-up of
          spaces on decoding: `decode` must give back exactly what `self.decode` gives.
        - special_tokens_map.json: the same special tokens, for older `transformers` versions.
        - generation_config.json (if it generates): a completion follows `[CLS] prompt [SEP]` and
          ends at the next [SEP], as `shared.data.encode_prompt` and the project's generate do.
        """
        directory = Path(directory)
        self.save(directory / "tokenizer.json")
        config = self.tokenizer_config(model_max_length, generates)
        atomic_write_text(directory / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")
        atomic_write_text(directory / "special_tokens_map.json", json.dumps(self.special_tokens_map(), indent=2) + "\n")
        if generates:
            generation = {"bos_token_id": self.cls_id, "eos_token_id": self.sep_id, "pad_token_id": self.pad_id}
            atomic_write_text(directory / "generation_config.json", json.dumps(generation, indent=2) + "\n")

    # ------------------------------------------------------------------ use

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def normalize(self, text: str) -> str:
        """The text as the tokenizer sees it; `decode(encode(text))` gives back exactly this."""
        normalizer = self.backend.normalizer
        return normalizer.normalize_str(text) if normalizer is not None else text

    def encode(self, text: str, pair: str | None = None, add_special_tokens: bool = True) -> list[int]:
        return self.backend.encode(text, pair, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[int]]:
        encodings = self.backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        return [e.ids for e in encodings]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def decode_batch(self, batch: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        return [self.decode(ids, skip_special_tokens) for ids in batch]

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self.backend.id_to_token(int(i))

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, pad_id={self.pad_id}, sep_id={self.sep_id})"
