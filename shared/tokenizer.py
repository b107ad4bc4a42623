"""One tokenizer for both frameworks: a byte-level BPE model from the `tokenizers` library.

Byte-level BPE (as GPT-2 and RoBERTa) starts from the 256 byte values, so every string has an
encoding and `decode(encode(text)) == normalize(text)` holds with no [UNK]. Special tokens are
BERT's ([PAD] [UNK] [CLS] [SEP] [MASK], ids 0..4 when trained here) and a sequence is encoded as
`[CLS] text [SEP]`, or `[CLS] a [SEP] b [SEP]` for a pair, as BERT does.

The saved `tokenizer.json` is the library's own format, so
`transformers.PreTrainedTokenizerFast(tokenizer_file=path)` loads it and encodes identically.
`save_pretrained` also writes what `transformers.AutoTokenizer` and `pipeline` read in a model
folder (`tokenizer_config.json`, `special_tokens_map.json`, `generation_config.json`).
`Tokenizer.load` also reads other `tokenizer.json` files (e.g. a BERT WordPiece one) as long as
they define the five special tokens.
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


class Tokenizer:
    """Thin wrapper that exposes the ids the models and data code need."""

    def __init__(self, backend: _Backend, source: str = "<memory>"):
        self.backend = backend
        ids = {token: backend.token_to_id(token) for token in SPECIAL_TOKENS}
        missing = [token for token, i in ids.items() if i is None]
        if missing:
            raise DataError(source, f"tokenizer lacks the special token(s) {', '.join(missing)}")
        self.pad_id = ids[PAD_TOKEN]
        self.unk_id = ids[UNK_TOKEN]
        self.cls_id = ids[CLS_TOKEN]
        self.sep_id = ids[SEP_TOKEN]
        self.mask_id = ids[MASK_TOKEN]
        self.special_ids = frozenset(ids.values())

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
        """Read a `tokenizer.json` file, or the one inside a directory."""
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
        return cls(backend, source=str(path))

    def save(self, path) -> None:
        """Write `tokenizer.json` atomically (to `path`, or into it if it is a directory)."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        atomic_write_text(path, self.backend.to_str(pretty=True))

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
        special = {"pad_token": PAD_TOKEN, "unk_token": UNK_TOKEN, "cls_token": CLS_TOKEN, "sep_token": SEP_TOKEN,
                   "mask_token": MASK_TOKEN}
        config = {"tokenizer_class": "PreTrainedTokenizerFast", **special, "model_max_length": model_max_length,
                  "padding_side": "left" if generates else "right", "clean_up_tokenization_spaces": False}
        atomic_write_text(directory / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")
        atomic_write_text(directory / "special_tokens_map.json", json.dumps(special, indent=2) + "\n")
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
