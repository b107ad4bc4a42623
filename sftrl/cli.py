"""The `sftrl` command line.

Every user-caused error ends as one line `error: ...` on stderr and exit code 2. PyTorch and
TensorFlow are imported only inside the commands that need them, so `--help`, `data` and
argument errors answer at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared import __version__
from shared.errors import SftrlError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line `error: ...` (exit 2) instead of usage + message."""

    def error(self, message):
        sys.stderr.write(f"error: {message} (see '{self.prog} --help')\n")
        sys.exit(EXIT_USAGE)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


# ----------------------------------------------------------------------------- commands

def cmd_data(args) -> int:
    """Write the built-in task data as JSONL files."""
    from shared.tasks import write_builtin_data

    paths = write_builtin_data(args.out, seed=args.seed)
    for name, path in paths.items():
        count = sum(1 for _ in open(path, encoding="utf-8"))
        print(f"wrote {path}  ({count} records)")
    return 0


def cmd_tokenizer(args) -> int:
    """Train a byte-level BPE tokenizer on the text fields of data files and save it."""
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


def cmd_sft(args) -> int:
    """Supervised fine-tuning in PyTorch on (prompt, completion) records."""
    from sftrl import sft_command
    return sft_command.run(args, pretrain=False)


def cmd_pretrain(args) -> int:
    """Pretraining in PyTorch on text records (masked LM by default, or causal LM)."""
    from sftrl import sft_command
    return sft_command.run(args, pretrain=True)


def cmd_rl(args) -> int:
    """RL in TensorFlow with a KL penalty to the SFT model, on prompts and a reward function: PPO,
    GRPO, RLOO or REINFORCE (--algorithm). `sftrl ppo` is this command."""
    from sftrl import ppo_command  # checks the input, then imports TensorFlow (quietly, via tf_impl)
    return ppo_command.run(args)


def cmd_dpo(args) -> int:
    """Direct preference optimisation (Rafailov et al. 2023) in PyTorch: the SFT model trained on
    preference pairs against itself, frozen, as the reference; no reward model, no sampling."""
    from sftrl import dpo_command
    return dpo_command.run(args)


def cmd_reward_model(args) -> int:
    """Train a reward model (TensorFlow) on preference pairs with the Bradley-Terry loss."""
    import tf_impl  # noqa: F401  (imports TensorFlow quietly)
    from sftrl import ppo_command
    return ppo_command.run_reward_model(args)


def cmd_bench(args) -> int:
    """Benchmark PyTorch against TensorFlow, against the libraries people use instead, and against
    the machine's own matmul peak. Ratios come from one process, both sides interleaved."""
    import tf_impl  # noqa: F401  (imports TensorFlow quietly)

    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise SftrlError("--device cuda: no CUDA device is available here")
    from benchmarks.runner import run

    suites = ["ops", "train", "generate", "ppo", "memory", "peers"] if args.suite == "all" else [args.suite]
    _, markdown = run(suites, size=args.size, device=args.device, out_dir=args.out, json_path=args.json,
                      log=(lambda *a: None) if args.quiet else print)
    print(markdown)
    print(f"\nwritten: {args.out}/results.md, {args.out}/<suite>.png, {args.json or args.out + '/results.json'}")
    return 0


def cmd_eval(args) -> int:
    """Evaluate models on the same prompts: reward per task, BLEU, perplexity of the references,
    KL to the first model, length and speed, with paired-bootstrap intervals of the differences."""
    from sftrl import eval_command
    return eval_command.run(args)


def cmd_human_eval(args) -> int:
    """Human evaluation by pairwise preference: export blind pairs, rate them, score them."""
    from sftrl import human_eval_command
    return human_eval_command.run(args)


def cmd_pipeline(args) -> int:
    """The main job: built-in data -> SFT (PyTorch) -> reward model and PPO (TensorFlow) ->
    evaluation of SFT vs RL -> report.md with tables and plots in the run directory."""
    import tf_impl  # noqa: F401  (imports TensorFlow quietly)
    if args.preset == "study":
        from sftrl import study
        study.run(args.out, main, size=args.size, seed=args.seed, quiet=args.quiet, resume=args.resume)
        return 0
    if args.resume or args.size != "full":
        raise SftrlError(f"{'--resume' if args.resume else '--size'}: only with --preset study (a pipeline's stage "
                         "resumes alone: the report's commands, with --resume)")
    from sftrl import pipeline
    pipeline.run(args.preset, args.out, main, quiet=args.quiet, seed=args.seed)
    return 0


def cmd_parity(args) -> int:
    """Run the parity registry: the same math in NumPy, PyTorch and TensorFlow, case by case."""
    from sftrl import parity_command
    return parity_command.run(args)


# ----------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sftrl",
        description="Supervised fine-tuning (PyTorch) and PPO (TensorFlow) of one BERT-style "
                    "model family, with parity tests, evaluation and benchmarks.",
    )
    parser.add_argument("--version", action="version", version=f"sftrl {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in (_add_data_commands, _add_training_commands, _add_evaluation_commands, _add_tool_commands):
        add(commands)
    return parser


def _command(commands, name: str, func, help: str, epilogue: str = "", aliases=()) -> argparse.ArgumentParser:
    """A subcommand: its parser, described by the function's docstring, and the function it runs."""
    p = commands.add_parser(name, help=help, description=func.__doc__ + epilogue, aliases=list(aliases))
    p.set_defaults(func=func)
    return p


def _add_data_commands(commands) -> None:
    p = _command(commands, "data", cmd_data, "write the built-in task data (JSONL)")
    p.add_argument("--out", required=True, help="directory for the *.jsonl files")
    p.add_argument("--seed", type=non_negative_int, default=0, help="generator seed (default 0)")

    p = _command(commands, "tokenizer", cmd_tokenizer, "train and save a tokenizer")
    p.add_argument("--data", nargs="+", required=True, metavar="FILE",
                   help="JSONL files of any record kind, or plain .txt files")
    p.add_argument("--vocab-size", type=positive_int, default=512, help="tokens, special ones "
                   "included (default 512)")
    p.add_argument("--out", required=True, help="tokenizer.json path (or a directory for it)")


def _add_training_commands(commands) -> None:
    from sftrl import sft_command  # argparse definitions only: cheap

    p = _command(commands, "pretrain", cmd_pretrain, "pretrain a model on text (PyTorch)")
    sft_command.add_arguments(p, pretrain=True)

    p = _command(commands, "sft", cmd_sft, "supervised fine-tuning on prompt/completion data (PyTorch)")
    sft_command.add_arguments(p, pretrain=False)

    from sftrl import ppo_command

    p = _command(commands, "rl", cmd_rl, "RL with a KL penalty to the SFT model: PPO, GRPO, RLOO, REINFORCE "
                 "(TensorFlow)", aliases=("ppo",))
    ppo_command.add_arguments(p)

    from sftrl import dpo_command

    p = _command(commands, "dpo", cmd_dpo, "direct preference optimisation from the SFT model (PyTorch)")
    dpo_command.add_arguments(p)

    p = _command(commands, "reward-model", cmd_reward_model,
                 "train a reward model on preference pairs (TensorFlow)")
    ppo_command.add_reward_model_arguments(p)


def _add_evaluation_commands(commands) -> None:
    from sftrl import eval_command

    p = _command(commands, "eval", cmd_eval, "evaluate models (e.g. SFT and RL) on the same prompts")
    eval_command.add_arguments(p)

    from sftrl import human_eval_command  # argparse definitions only: cheap

    p = _command(commands, "human-eval", cmd_human_eval,
                 "human evaluation: export blind A/B pairs, rate, score")
    human_eval_command.add_arguments(p, _Parser)


def _add_tool_commands(commands) -> None:
    from sftrl import parity_command  # argparse definitions only: cheap

    p = _command(commands, "pipeline", cmd_pipeline,
                 "the main job: data, pretraining, SFT, reward model, PPO, evaluation, report (or the whole study)")
    p.add_argument("--preset", choices=("quick", "default", "study"), default="default",
                   help="quick: under a minute, SFT against a few PPO iterations; default: pretraining, SFT, "
                   "reward model, PPO, the README's figures (under 5 min on 2 cores); study: every question of the "
                   "seed document, each a report section (under 30 min on 2 cores)")
    p.add_argument("--size", choices=("full", "tiny"), default="full",
                   help="study only: tiny checks the machinery in a few minutes, not the quality")
    p.add_argument("--resume", action="store_true",
                   help="study only: skip the runs that finished, resume the interrupted one, rewrite the report")
    p.add_argument("--out", default="runs/pipeline", help="run directory (default runs/pipeline)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = _command(commands, "bench", cmd_bench, "benchmarks: PyTorch vs TensorFlow vs peers vs matmul peak")
    p.add_argument("--suite", choices=("ops", "train", "generate", "ppo", "memory", "peers", "all"), default="all",
                   help="peers: TRL's GRPOTrainer on the same RL job, if `pip install \".[peers]\"` added TRL "
                   "(skipped with a line otherwise)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--size", choices=("default", "tiny"), default="default",
                   help="tiny: a smoke run that checks the machinery, not the speed")
    p.add_argument("--out", default="benchmarks/results", help="folder for results.md, PNG charts and JSON")
    p.add_argument("--json", metavar="PATH", help="JSON path (default: OUT/results.json)")
    p.add_argument("--quiet", action="store_true")

    p = _command(commands, "parity", cmd_parity, "check NumPy / PyTorch / TensorFlow parity, case by case",
                 " Exits 0 only if every case passes.")
    parity_command.add_arguments(p)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except SftrlError as e:
        sys.stderr.write(f"error: {e}\n")
        return EXIT_USAGE
    except OSError as e:  # a full disk, a read-only file system, ... outside shared.io's own checks
        where = f"{e.filename}: " if e.filename else ""
        sys.stderr.write(f"error: {where}{e.strerror or e}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
