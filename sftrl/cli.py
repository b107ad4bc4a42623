"""The `sftrl` command line: the parser and one `cmd_*` function per command, each running its
module of `sftrl/commands/`.

Every user-caused error ends as one line `error: ...` on stderr and exit code 2. PyTorch and
TensorFlow are imported only inside the commands that need them, so `--help`, `data` and
argument errors answer at once.
"""

from __future__ import annotations

import argparse
import sys

from shared import __version__
from shared.errors import SftrlError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line `error: ...` (exit 2) instead of usage + message."""

    def error(self, message):
        sys.stderr.write(f"error: {message} (see '{self.prog} --help')\n")
        sys.exit(EXIT_USAGE)


# ----------------------------------------------------------------------------- commands
# Each runs its module of sftrl/commands/, imported only when it runs; the docstring is its --help.

def cmd_data(args) -> int:
    """Write the built-in task data as JSONL files: sft, prompt, preference, text (the clean
    pretraining corpus: no solved task instance) and text_contaminated ("prompt = answer" lines,
    to measure pretraining on solved instances), each .train and .eval."""
    from sftrl.commands import data
    return data.run_data(args)


def cmd_tokenizer(args) -> int:
    """Train a byte-level BPE tokenizer on the text fields of data files and save it."""
    from sftrl.commands import data
    return data.run_tokenizer(args)


def cmd_sft(args) -> int:
    """Supervised fine-tuning in PyTorch on (prompt, completion) records."""
    from sftrl.commands import sft
    return sft.run(args, pretrain=False)


def cmd_pretrain(args) -> int:
    """Pretraining in PyTorch on text records (masked LM by default, or causal LM)."""
    from sftrl.commands import sft
    return sft.run(args, pretrain=True)


def cmd_rl(args) -> int:
    """RL in TensorFlow with a KL penalty to the SFT model, on prompts and a reward function: PPO,
    GRPO, RLOO or REINFORCE (--algorithm). `sftrl ppo` is this command."""
    from sftrl.commands import rl  # checks the input, then imports TensorFlow (quietly, via tf_impl)
    return rl.run(args)


def cmd_dpo(args) -> int:
    """Direct preference optimisation (Rafailov et al. 2023) in PyTorch: the SFT model trained on
    preference pairs against itself, frozen, as the reference; no reward model, no sampling."""
    from sftrl.commands import dpo
    return dpo.run(args)


def cmd_reward_model(args) -> int:
    """Train a reward model (TensorFlow) on preference pairs with the Bradley-Terry loss."""
    from sftrl.commands import reward_model  # checks the input, then imports TensorFlow (quietly, via tf_impl)
    return reward_model.run(args)


def cmd_bench(args) -> int:
    """Benchmark PyTorch against TensorFlow, against the libraries people use instead, and against
    the machine's own matmul peak. Ratios come from one process, both sides interleaved."""
    from sftrl.commands import bench
    return bench.run(args)


def cmd_eval(args) -> int:
    """Evaluate models on the same prompts: reward per task, BLEU, perplexity of the references,
    the Monte-Carlo sequence KL to the first model (from sampled completions), length and speed,
    with bootstrap intervals (of the KL, and paired ones of the differences)."""
    from sftrl.commands import eval as eval_command
    return eval_command.run(args)


def cmd_human_eval(args) -> int:
    """Human evaluation by pairwise preference: export blind pairs, rate them, score them."""
    from sftrl.commands import human_eval
    return human_eval.run(args)


def cmd_pipeline(args) -> int:
    """The main job: built-in data -> SFT (PyTorch) -> reward model and PPO (TensorFlow) ->
    evaluation of SFT vs RL -> report.md with tables and plots in the run directory."""
    from sftrl.commands import pipeline
    return pipeline.run(args, main)


def cmd_parity(args) -> int:
    """Run the parity registry: the same math in NumPy, PyTorch and TensorFlow, case by case."""
    from sftrl.commands import parity
    return parity.run(args)


# ----------------------------------------------------------------------------- parser
# The command modules' argparse definitions import no framework: building the parser is cheap.

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
    from sftrl.commands import data

    data.add_data_arguments(_command(commands, "data", cmd_data, "write the built-in task data (JSONL)"))
    data.add_tokenizer_arguments(_command(commands, "tokenizer", cmd_tokenizer, "train and save a tokenizer"))


def _add_training_commands(commands) -> None:
    from sftrl.commands import dpo, reward_model, rl, sft

    sft.add_arguments(_command(commands, "pretrain", cmd_pretrain, "pretrain a model on text (PyTorch)"), pretrain=True)
    sft.add_arguments(_command(commands, "sft", cmd_sft, "supervised fine-tuning on prompt/completion data "
                               "(PyTorch)"), pretrain=False)
    rl.add_arguments(_command(commands, "rl", cmd_rl, "RL with a KL penalty to the SFT model: PPO, GRPO, RLOO, "
                              "REINFORCE (TensorFlow)", aliases=("ppo",)))
    dpo.add_arguments(_command(commands, "dpo", cmd_dpo, "direct preference optimisation from the SFT model (PyTorch)"))
    reward_model.add_arguments(_command(commands, "reward-model", cmd_reward_model,
                                        "train a reward model on preference pairs (TensorFlow)"))


def _add_evaluation_commands(commands) -> None:
    from sftrl.commands import eval as eval_command
    from sftrl.commands import human_eval

    eval_command.add_arguments(_command(commands, "eval", cmd_eval, "evaluate models (e.g. SFT and RL) on the same "
                                        "prompts"))
    human_eval.add_arguments(_command(commands, "human-eval", cmd_human_eval, "human evaluation: export blind A/B "
                                      "pairs, rate, score"), _Parser)


def _add_tool_commands(commands) -> None:
    from sftrl.commands import bench, parity, pipeline

    pipeline.add_arguments(_command(commands, "pipeline", cmd_pipeline, "the main job: data, pretraining, SFT, reward "
                                    "model, PPO, evaluation, report (or the whole study)"))
    bench.add_arguments(_command(commands, "bench", cmd_bench, "benchmarks: PyTorch vs TensorFlow vs peers vs matmul "
                                 "peak"))
    parity.add_arguments(_command(commands, "parity", cmd_parity, "check NumPy / PyTorch / TensorFlow parity, case "
                                  "by case", " Exits 0 only if every case passes."))


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
