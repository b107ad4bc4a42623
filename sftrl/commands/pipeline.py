"""`sftrl pipeline`: the flags, and which job runs -- the quick and default presets
(`sftrl.pipeline.stages`) or the whole study (`sftrl.pipeline.study`). Both run each stage as its own
`sftrl` command through `run_command` (the CLI's `main`, passed in: the CLI calls the pipeline, not
the other way round)."""

from __future__ import annotations

from shared.config import ARCHITECTURES
from shared.errors import SftrlError


def add_arguments(p) -> None:
    p.add_argument("--preset", choices=("quick", "default", "study"), default="default",
                   help="quick: under a minute, SFT against a few PPO iterations; default: pretraining, SFT, "
                   "reward model, PPO, the figures of the docs' home page (under 5 min on 2 cores); study: every question of the "
                   "seed document, each a report section (under 30 min on 2 cores)")
    p.add_argument("--size", choices=("full", "tiny"), default="full",
                   help="study only: tiny checks the machinery in a few minutes, not the quality")
    p.add_argument("--resume", action="store_true",
                   help="study only: skip the runs that finished, resume the interrupted one, rewrite the report")
    p.add_argument("--out", default="runs/pipeline", help="run directory (default runs/pipeline)")
    p.add_argument("--architecture", choices=ARCHITECTURES, default="bert",
                   help="the architecture of the pipeline's models: bert, gpt2 or llama, at the same size "
                   "(quick and default presets; default bert)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args, run_command) -> int:
    if args.preset != "study" and (args.resume or args.size != "full"):
        raise SftrlError(f"{'--resume' if args.resume else '--size'}: only with --preset study (a pipeline's stage "
                         "resumes alone: the report's commands, with --resume)")
    import tf_impl  # noqa: F401  (the input is fine: now TensorFlow, imported quietly)

    if args.preset == "study" and args.architecture != "bert":
        raise SftrlError("--architecture: the study compares the architectures itself; use it with --preset "
                         "quick or default")
    if args.preset == "study":
        from sftrl.pipeline import study
        study.run(args.out, run_command, size=args.size, seed=args.seed, quiet=args.quiet, resume=args.resume)
        return 0
    from sftrl.pipeline import stages
    stages.run(args.preset, args.out, run_command, quiet=args.quiet, seed=args.seed, architecture=args.architecture)
    return 0
