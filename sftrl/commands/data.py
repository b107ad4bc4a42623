"""`sftrl data` (the built-in task data as JSONL) and `sftrl tokenizer` (a byte-level BPE tokenizer
trained on data files). Framework-free: neither imports PyTorch or TensorFlow."""

from __future__ import annotations

from pathlib import Path

from shared.errors import SftrlError
from sftrl.commands.flags import non_negative_int, positive_int


def add_data_arguments(p) -> None:
    p.add_argument("--out", required=True, help="directory for the *.jsonl files")
    p.add_argument("--seed", type=non_negative_int, default=0, help="generator seed (default 0)")


def add_tokenizer_arguments(p) -> None:
    p.add_argument("--data", nargs="+", required=True, metavar="FILE",
                   help="JSONL files of any record kind, or plain .txt files")
    p.add_argument("--vocab-size", type=positive_int, default=512, help="tokens, special ones "
                   "included (default 512)")
    p.add_argument("--out", required=True, help="tokenizer.json path (or a directory for it)")


def run_data(args) -> int:
    from shared.tasks import write_builtin_data

    paths = write_builtin_data(args.out, seed=args.seed)
    for name, path in paths.items():
        count = sum(1 for _ in open(path, encoding="utf-8"))
        print(f"wrote {path}  ({count} records)")
    return 0


def run_tokenizer(args) -> int:
    from shared.data import load_any, record_texts
    from shared.tokenizer import MIN_VOCAB_SIZE, Tokenizer

    if args.vocab_size < MIN_VOCAB_SIZE:
        raise SftrlError(f"--vocab-size: must be >= {MIN_VOCAB_SIZE} "
                         f"(256 bytes + 5 special tokens), got {args.vocab_size}")
    texts = []
    for path in args.data:
        kind, records = load_any(path)
        texts.extend(t for r in records for t in record_texts(r))
    tokenizer = Tokenizer.train(texts, vocab_size=args.vocab_size)
    out = Path(args.out)
    if out.is_dir() or args.out.endswith("/"):
        out = out / "tokenizer.json"
    tokenizer.save(out)
    print(f"wrote {out}  (vocab_size={tokenizer.vocab_size}, trained on {len(texts)} texts)")
    return 0
