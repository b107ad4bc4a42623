"""`sftrl ppo` and `sftrl reward-model`: arguments -> models, prompts, reward -> tf_impl."""

from __future__ import annotations

import json
from pathlib import Path

from shared.config import PPOConfig
from shared.errors import ConfigError, SftrlError

PPO_FLAGS = ("iterations", "batch_size", "minibatch_size", "ppo_epochs", "lr", "max_new_tokens", "temperature",
             "top_k", "gamma", "lam", "clip_range", "clip_range_value", "vf_coef", "ent_coef", "kl_coef",
             "target_kl", "kl_horizon", "max_grad_norm", "save_every", "seed")


def add_arguments(p) -> None:
    d = PPOConfig()
    p.add_argument("--policy", required=True, help="the SFT model folder (causal): policy and frozen reference")
    p.add_argument("--prompts", required=True, help="JSONL of 'prompt' records to roll out on")
    p.add_argument("--eval-prompts", help="held-out prompts: greedy reward of the SFT and the RL model, "
                   "paired-bootstrap interval of the difference, written to eval.json")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--reward", default="task", help="task (partial credit), task-exact (sparse), bleu "
                   "(against each record's reference), or model:DIR (a trained reward model); default: task")
    p.add_argument("--length-penalty", type=float, default=0.0, metavar="COEF",
                   help="subtract COEF per word beyond --max-words from every reward (default 0: off)")
    p.add_argument("--max-words", type=int, default=16, help="words allowed before the length penalty (default 16)")
    for name, help_text in [
            ("iterations", "rollout-and-update rounds"), ("batch_size", "prompts per rollout"),
            ("minibatch_size", "sequences per gradient step"), ("ppo_epochs", "passes over each rollout"),
            ("lr", "Adam learning rate"), ("max_new_tokens", "longest completion"),
            ("temperature", "sampling temperature"), ("top_k", "sample from the k likeliest tokens; 0 = all"),
            ("gamma", "discount"), ("lam", "GAE lambda"), ("clip_range", "PPO clip epsilon"),
            ("clip_range_value", "value clip"), ("vf_coef", "value-loss weight"), ("ent_coef", "entropy bonus"),
            ("kl_coef", "initial KL penalty beta"), ("target_kl", "adaptive KL target (default: fixed beta)"),
            ("kl_horizon", "adaptive KL horizon"), ("max_grad_norm", "global gradient-norm clip; 0 = off"),
            ("save_every", "checkpoint every N iterations (default: at the end)"), ("seed", "seed")]:
        kind = float if isinstance(getattr(d, name), float) or name == "target_kl" else int
        p.add_argument("--" + name.replace("_", "-"), type=kind,
                       help=f"{help_text} (default {getattr(d, name)})")
    p.add_argument("--whiten-rewards", action="store_true", help="normalise per-token rewards before GAE")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar or samples")


def build_config(args) -> PPOConfig:
    values = {n: getattr(args, n) for n in PPO_FLAGS if getattr(args, n, None) is not None}
    if args.whiten_rewards:
        values["whiten_rewards"] = True
    try:
        return PPOConfig(**values)
    except ConfigError as e:
        raise SftrlError(f"--{e.field.replace('_', '-')}: {e.problem}") from None


def reward_function(args, tokenizer):
    from shared.rewards import get_reward, with_length_penalty

    spec = args.reward
    if spec.startswith("model:"):
        from tf_impl.reward_model import load_reward_model, reward_fn_from_model
        fn = reward_fn_from_model(load_reward_model(spec[len("model:"):]), tokenizer)
    else:
        fn = get_reward(spec)
    if args.length_penalty < 0:
        raise SftrlError(f"--length-penalty: must be >= 0, got {args.length_penalty}")
    if args.length_penalty > 0:
        fn = with_length_penalty(fn, args.length_penalty, args.max_words)
    return fn


def run(args) -> int:
    import numpy as np

    from shared.data import load_jsonl
    from shared.io import atomic_write_text
    from shared.metrics import paired_bootstrap
    from shared.tokenizer import Tokenizer
    from tf_impl import ppo

    config = build_config(args)
    records = load_jsonl(args.prompts, "prompt")
    eval_records = load_jsonl(args.eval_prompts, "prompt") if args.eval_prompts else []
    policy_dir = Path(args.policy)
    if not (policy_dir / "tokenizer.json").exists():
        raise SftrlError(f"--policy {policy_dir}: no tokenizer.json (expected an `sftrl sft` output folder)")
    tokenizer = Tokenizer.load(policy_dir / "tokenizer.json")
    reward_fn = reward_function(args, tokenizer)
    policy, reference = ppo.load_policy_and_reference(policy_dir)
    if policy.config.vocab_size != tokenizer.vocab_size:
        raise SftrlError(f"--policy {policy_dir}: model vocabulary {policy.config.vocab_size} != tokenizer "
                         f"vocabulary {tokenizer.vocab_size}")
    summary = ppo.train(policy, reference, tokenizer, records, config, reward_fn, args.out, resume=args.resume,
                        quiet=args.quiet)
    print(f"done: {config.iterations} PPO iterations; policy written to {args.out}/")
    if eval_records:
        before_exact, before_partial, _ = ppo.evaluate_policy(reference, eval_records, tokenizer, config.max_new_tokens)
        after_exact, after_partial, completions = ppo.evaluate_policy(policy, eval_records, tokenizer,
                                                                       config.max_new_tokens)
        report = {"prompts": len(eval_records)}
        for name, a, b in (("exact_match", before_exact, after_exact), ("partial_credit", before_partial, after_partial)):
            diff, low, high = paired_bootstrap(a, b, seed=config.seed)
            report[name] = {"sft": float(a.mean()), "rl": float(b.mean()), "difference": diff,
                            "ci95": [low, high]}
            print(f"held-out {name}: SFT {a.mean():.3f} -> RL {b.mean():.3f}  "
                  f"(difference {diff:+.3f}, 95% CI [{low:+.3f}, {high:+.3f}])")
        last = json.loads((Path(args.out) / "metrics.jsonl").read_text().splitlines()[-1])
        report["final_kl_to_sft"] = last["objective/kl"]
        print(f"KL to the SFT model (last rollout, summed over tokens): {last['objective/kl']:.3f}")
        atomic_write_text(Path(args.out) / "eval.json", json.dumps(report, indent=2) + "\n")
        del summary, np
    return 0


def add_reward_model_arguments(p) -> None:
    p.add_argument("--data", required=True, help="JSONL of 'preference' records (prompt, chosen, rejected)")
    p.add_argument("--eval-data", help="held-out preference records: pairwise accuracy")
    p.add_argument("--init", required=True, help="the SFT model folder whose backbone the reward model starts from")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--epochs", type=int, default=10, help="passes over the pairs (default 10)")
    p.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate (default 3e-4)")
    p.add_argument("--batch-size", type=int, default=32, help="pairs per step (default 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_reward_model(args) -> int:
    from shared.data import load_jsonl
    from shared.tokenizer import Tokenizer
    from tf_impl.reward_model import init_from_sft, train_reward_model

    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size)):
        if value < 1:
            raise SftrlError(f"{flag}: must be >= 1, got {value}")
    if not args.lr > 0:
        raise SftrlError(f"--lr: must be > 0, got {args.lr}")
    records = load_jsonl(args.data, "preference")
    eval_records = load_jsonl(args.eval_data, "preference") if args.eval_data else []
    tokenizer = Tokenizer.load(Path(args.init) / "tokenizer.json")
    import keras
    keras.utils.set_random_seed(args.seed)  # before the layers exist: their dropout seeds come from it
    model = init_from_sft(args.init)
    summary = train_reward_model(model, tokenizer, records, eval_records, args.out, epochs=args.epochs, lr=args.lr,
                                 batch_size=args.batch_size, seed=args.seed, quiet=args.quiet)
    shown = ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if "accuracy" in k)
    print(f"reward model written to {args.out}/ ({shown})")
    return 0
