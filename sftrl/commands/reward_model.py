"""`sftrl reward-model`: preference pairs and the SFT model's backbone -> tf_impl.reward_model."""

from __future__ import annotations

from pathlib import Path

from shared.config import RewardModelConfig
from shared.random_streams import integer_seed
from sftrl.commands.flags import add_config_flags, config_from_args

HELP = {"seed": "seeds dropout (set before the model is built) and the order of the pairs in each epoch",
        "xla": "XLA-compile the training step (jit_compile). Each batch shape costs one compile (batches are padded "
               "to a multiple of 16 tokens, so there are few); that pays back only where the compiled step is "
               "faster, which on a CPU at the built-in sizes it was not, hence off by default (`sftrl bench "
               "--suite train` compares a TensorFlow training step with and without XLA on your machine)"}


def add_arguments(p) -> None:
    p.add_argument("--data", required=True, help="JSONL of 'preference' records (prompt, chosen, rejected)")
    p.add_argument("--eval-data", help="held-out preference records: pairwise accuracy")
    p.add_argument("--init", required=True, help="the SFT model folder whose backbone the reward model starts from")
    p.add_argument("--out", required=True, help="output folder")
    add_config_flags(p, RewardModelConfig, ["epochs", "lr", "batch_size", "seed", "xla"], HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_config(args) -> RewardModelConfig:
    """The run's RewardModelConfig, from its flags."""
    return config_from_args(RewardModelConfig, args)


def run(args) -> int:
    from shared.data import load_jsonl
    from shared.tokenizer import Tokenizer

    config = build_config(args)
    records = load_jsonl(args.data, "preference")
    eval_records = load_jsonl(args.eval_data, "preference") if args.eval_data else []
    tokenizer = Tokenizer.load(Path(args.init) / "tokenizer.json")

    # ---- the input is fine: now TensorFlow (imported quietly by tf_impl)
    import tf_impl  # noqa: F401
    import keras

    from tf_impl.reward_model import init_from_sft, train_reward_model

    # before the layers exist: the head's initial weights and the dropout seeds come from it
    keras.utils.set_random_seed(integer_seed("init", config.seed))
    model = init_from_sft(args.init)
    summary = train_reward_model(model, tokenizer, records, eval_records, config, args.out, quiet=args.quiet)
    shown = ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if "accuracy" in k)
    print(f"reward model written to {args.out}/ ({shown})")
    return 0
