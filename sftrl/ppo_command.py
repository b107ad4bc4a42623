"""`sftrl rl` (= `sftrl ppo` with --algorithm) and `sftrl reward-model`: arguments -> models,
prompts, reward -> tf_impl."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from shared.config import PPOConfig
from shared.algorithms import ALGORITHMS, RL_ALGORITHMS
from shared.constants import LOSS_NORMALISATIONS
from shared.cpu import onednn_bf16_would_crash_tensorflow
from shared.errors import ConfigError, SftrlError
from shared.interrupt import EXIT_INTERRUPTED, interrupted_message

PPO_FLAGS = ("algorithm", "iterations", "batch_size", "group_size", "minibatch_size", "ppo_epochs", "lr",
             "max_new_tokens", "temperature", "top_k", "gamma", "lam", "clip_range", "clip_range_value", "vf_coef",
             "ent_coef", "kl_coef", "target_kl", "kl_horizon", "loss_normalisation", "baseline_decay",
             "max_grad_norm", "save_every", "lora_rank", "lora_alpha", "seed")


# The numeric flags of `sftrl rl`, each a PPOConfig field, with its help text.
NUMERIC_FLAGS = [
    ("iterations", "rollout-and-update rounds"),
    ("batch_size", "completions per rollout (grpo, rloo: batch-size / group-size prompts)"),
    ("group_size", "grpo, rloo: completions sampled per prompt, >= 2"),
    ("minibatch_size", "ppo, grpo: sequences per gradient step"),
    ("ppo_epochs", "ppo, grpo: passes over each rollout"),
    ("lr", "Adam learning rate"), ("max_new_tokens", "longest completion"),
    ("temperature", "sampling temperature"), ("top_k", "sample from the k likeliest tokens; 0 = all"),
    ("gamma", "discount"), ("lam", "GAE lambda"), ("clip_range", "PPO clip epsilon"),
    ("clip_range_value", "value clip"), ("vf_coef", "value-loss weight"), ("ent_coef", "entropy bonus"),
    ("kl_coef", "initial KL penalty beta"), ("target_kl", "adaptive KL target (default: fixed beta)"),
    ("kl_horizon", "adaptive KL horizon"),
    ("baseline_decay", "reinforce: b <- decay b + (1 - decay) mean reward after each rollout"),
    ("max_grad_norm", "global gradient-norm clip; 0 = off"),
    ("save_every", "checkpoint every N iterations (default: at the end)"),
    ("lora_rank", "train LoRA adapters of this rank on query/key/value (and, with ppo, the value head) only; "
     "0 = every weight"),
    ("lora_alpha", "LoRA scale numerator: the adapters are scaled by alpha / rank"), ("seed", "seed")]


def add_arguments(p) -> None:
    d = PPOConfig()
    p.add_argument("--algorithm", choices=RL_ALGORITHMS, default="ppo",
                   help="; ".join(f"{a.name}: {a.summary}" for a in ALGORITHMS.values())
                   + " (docs/guide.md, 'The policy-gradient family'; default ppo)")
    p.add_argument("--policy", required=True, help="the SFT model folder (causal): policy and frozen reference")
    p.add_argument("--prompts", required=True, help="JSONL of 'prompt' records to roll out on; every prompt "
                   "([CLS] and [SEP] included) plus --max-new-tokens must fit the policy's context "
                   "(max_position_embeddings), else the run is refused before training, naming FILE:LINE")
    p.add_argument("--eval-prompts", help="held-out prompts (the same length rule): greedy reward of the SFT and "
                   "the RL model, paired-bootstrap interval of the difference, written to eval.json")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--reward", default="task", help="task (partial credit), task-exact (sparse), bleu "
                   "(against each record's reference), model:DIR (a trained reward model), or FILE.py:FUNCTION "
                   "(your own FUNCTION(prompt, completion, reference) -> float); default: task")
    p.add_argument("--length-penalty", type=float, default=0.0, metavar="COEF",
                   help="subtract COEF per word beyond --max-words from every reward (default 0: off)")
    p.add_argument("--max-words", type=int, default=16, help="words allowed before the length penalty (default 16)")
    for name, help_text in NUMERIC_FLAGS:
        kind = float if isinstance(getattr(d, name), float) or name == "target_kl" else int
        p.add_argument("--" + name.replace("_", "-"), type=kind,
                       help=f"{help_text} (default {getattr(d, name)})")
    p.add_argument("--loss-normalisation", choices=LOSS_NORMALISATIONS,
                   help="grpo: sequence = mean over each completion's tokens, then over completions (the GRPO "
                   "paper); token = over all tokens of the minibatch (DAPO) (default sequence)")
    p.add_argument("--whiten-rewards", action="store_true", help="ppo: normalise per-token rewards before GAE")
    p.add_argument("--no-xla", action="store_true", help="run the traced train, scoring and decoding steps "
                   "without XLA (jit_compile): no compile in the first iteration (~17 s on 2 cores), about 1.5x "
                   "slower iterations after it, so faster for runs of under ~20 iterations; XLA is off anyway "
                   "with --distribute")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cpu hides the GPUs from TensorFlow; cuda needs a GPU TensorFlow can see (default cpu)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="bf16: mixed precision (bfloat16 compute; weights, optimizer, log-probs, losses and KL "
                   "stay float32; the exported weights are float32)")
    p.add_argument("--distribute", choices=("none", "mirrored", "multi-worker"), default="none",
                   help="mirrored: tf.distribute.MirroredStrategy over the visible devices (the GPUs with "
                   "--device cuda); multi-worker: MultiWorkerMirroredStrategy, one process per worker, configured "
                   "by TF_CONFIG (the chief writes, all read --out). Each minibatch is split between the "
                   "replicas; --minibatch-size must be a multiple of their number (default none)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out "
                   "(after Ctrl-C, a kill or a crash; the result is bitwise that of an uninterrupted run)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or samples")


def build_config(args) -> PPOConfig:
    values = {n: getattr(args, n) for n in PPO_FLAGS if getattr(args, n, None) is not None}
    if args.whiten_rewards:
        values["whiten_rewards"] = True
    if args.no_xla:
        values["xla"] = False
    try:
        return PPOConfig(**values)
    except ConfigError as e:
        raise SftrlError(f"--{e.field.replace('_', '-')}: {e.problem}") from None


def load_user_reward(spec: str):
    """`FILE.py:FUNCTION` -> the function, wrapped so that anything it raises or a non-number it
    returns becomes a one-line error naming the file (and the line it failed on)."""
    import importlib.util
    import numbers
    import traceback

    path, _, name = spec.rpartition(":")
    if not Path(path).is_file():
        raise SftrlError(f"--reward {spec}: no such file {path}")
    module_spec = importlib.util.spec_from_file_location(f"sftrl_user_reward_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # the user's code: report it as theirs, in one line
        line = f":{e.lineno}" if isinstance(e, SyntaxError) and e.lineno else ""
        raise SftrlError(f"--reward {spec}: cannot load {path}{line} ({type(e).__name__}: {e})") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise SftrlError(f"--reward {spec}: {path} has no function {name!r}")

    def reward(prompt, completion, reference=None):
        try:
            value = fn(prompt, completion, reference)
        except Exception as e:
            frames = [f for f in traceback.extract_tb(e.__traceback__) if Path(f.filename) == Path(path)]
            where = f"{path}:{frames[-1].lineno}" if frames else path
            raise ValueError(f"{where}: {type(e).__name__}: {e}") from None
        if not isinstance(value, numbers.Real):
            raise ValueError(f"{path}: {name} returned {value!r}, not a number")
        return value
    return reward


def reward_function(args, tokenizer):
    from shared.rewards import get_reward, with_length_penalty

    spec = args.reward
    if spec.startswith("model:"):
        from tf_impl.reward_model import load_reward_model, reward_fn_from_model
        fn = reward_fn_from_model(load_reward_model(spec[len("model:"):]), tokenizer)
    elif spec.rpartition(":")[0].endswith(".py"):
        fn = load_user_reward(spec)
    elif spec.endswith(".py"):
        raise SftrlError(f"--reward {spec}: name the function too, as FILE.py:FUNCTION")
    else:
        fn = get_reward(spec)
    if args.length_penalty < 0:
        raise SftrlError(f"--length-penalty: must be >= 0, got {args.length_penalty}")
    if args.length_penalty > 0:
        fn = with_length_penalty(fn, args.length_penalty, args.max_words)
    return fn


def configure_tensorflow(device: str, distribute: str, minibatch_size: int, flag: str = "--minibatch-size"):
    """Devices and distribution, set before TensorFlow runs its first op. Returns (strategy or
    None, is_chief)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if device == "cuda":
        if not gpus:
            raise SftrlError("--device cuda: TensorFlow sees no GPU here")
        for gpu in gpus:  # take memory as needed, not all of it up front
            tf.config.experimental.set_memory_growth(gpu, True)
    elif gpus:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # only in a process that already ran TensorFlow (a test calling main())
            raise SftrlError("--device cpu: TensorFlow already runs on the GPU in this process") from None
    if distribute == "none":
        return None, True
    if distribute == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        is_chief = True
    else:
        if "TF_CONFIG" not in os.environ:
            raise SftrlError("--distribute multi-worker: set TF_CONFIG to the cluster and this worker's task, e.g. "
                             '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                             '"task": {"type": "worker", "index": 0}}')
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError as e:
            raise SftrlError(f"--distribute multi-worker: TF_CONFIG is not valid JSON ({e})") from None
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        resolver = strategy.cluster_resolver
        is_chief = resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                                     and "chief" not in resolver.cluster_spec().as_dict())
    replicas = strategy.num_replicas_in_sync
    if minibatch_size % replicas:
        raise SftrlError(f"{flag}: must be a multiple of the {replicas} replicas of --distribute "
                         f"{distribute}, got {minibatch_size}")
    return strategy, is_chief


def load_inputs(args):
    """Everything a user can get wrong, checked before TensorFlow is imported (fast errors).
    Returns (config, records, eval_records, tokenizer)."""
    from shared.config import ModelConfig
    from shared.data import check_prompts_fit, load_jsonl
    from shared.io import latest_checkpoint
    from shared.tokenizer import Tokenizer

    config = build_config(args)
    out = Path(args.out)
    if args.resume and latest_checkpoint(out) is None:
        raise SftrlError(f"--resume: no checkpoint in {out / 'checkpoints'} to resume from")
    records = load_jsonl(args.prompts, "prompt")
    eval_records = load_jsonl(args.eval_prompts, "prompt") if args.eval_prompts else []
    policy_dir = Path(args.policy)
    if not (policy_dir / "tokenizer.json").exists():
        raise SftrlError(f"--policy {policy_dir}: no tokenizer.json (expected an `sftrl sft` output folder)")
    tokenizer = Tokenizer.load(policy_dir / "tokenizer.json")
    if (policy_dir / "config.json").exists():
        try:
            context = ModelConfig.from_json_file(policy_dir / "config.json").max_position_embeddings
        except SftrlError as e:
            raise SftrlError(f"--policy: {e}") from None
        check_prompts_fit(args.prompts, records, tokenizer, config.max_new_tokens, context, "--prompts",
                          "the policy's context")
        if eval_records:
            check_prompts_fit(args.eval_prompts, eval_records, tokenizer, config.max_new_tokens, context,
                              "--eval-prompts", "the policy's context")
    return config, records, eval_records, tokenizer


def compare_on_held_out(prompts, sft_completions, completions, seed, label="RL") -> dict:
    """Held-out exact match and partial credit, SFT -> the trained model, with paired-bootstrap
    intervals of the differences; printed, and returned as a dict."""
    from shared.metrics import paired_bootstrap
    from shared.tasks import task_scores

    scores = {side: [np.array(values, dtype=float) for values in task_scores(prompts, texts)]
              for side, texts in (("sft", sft_completions), ("rl", completions))}
    report = {"prompts": len(prompts)}
    for i, name in enumerate(("exact_match", "partial_credit")):
        a, b = scores["sft"][i], scores["rl"][i]
        diff, low, high = paired_bootstrap(a, b, seed=seed)
        report[name] = {"sft": float(a.mean()), "rl": float(b.mean()), "difference": diff, "ci95": [low, high]}
        print(f"held-out {name}: SFT {a.mean():.3f} -> {label} {b.mean():.3f}  "
              f"(difference {diff:+.3f}, 95% CI [{low:+.3f}, {high:+.3f}])")
    return report


def evaluate_against_sft(policy, reference, eval_records, tokenizer, config, out) -> None:
    """Greedy completions of the held-out prompts by the SFT model (the reference) and the RL
    policy, compared (`compare_on_held_out`); written to OUT/eval.json with the final KL."""
    from shared.io import atomic_write_text
    from tf_impl.generate import greedy_completions

    prompts = [r["prompt"] for r in eval_records]
    sft, rl = (greedy_completions(model, tokenizer, prompts, config.max_new_tokens, batch_size=128)[0]
               for model in (reference, policy))
    report = compare_on_held_out(prompts, sft, rl, config.seed, config.algorithm.upper())
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    report["final_kl_to_sft"] = last["objective/kl"]
    print(f"KL to the SFT model (last rollout, summed over tokens): {last['objective/kl']:.3f}")
    atomic_write_text(out / "eval.json", json.dumps(report, indent=2) + "\n")


def run(args) -> int:
    config, records, eval_records, tokenizer = load_inputs(args)
    policy_dir, out = Path(args.policy), Path(args.out)

    # ---- the input is fine: now TensorFlow (imported quietly by tf_impl), set up before its first op
    if args.precision == "bf16" and onednn_bf16_would_crash_tensorflow():
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"  # TensorFlow's own bfloat16 kernels, as on an AVX2 CPU
    import tf_impl  # noqa: F401
    rows_flag = "--minibatch-size" if config.spec.epochs else "--batch-size"  # the rows of a gradient step
    strategy, is_chief = configure_tensorflow(args.device, args.distribute, config.steps_per_rollout[1], rows_flag)
    from tf_impl import rl_run
    from tf_impl.ppo import PPOTrainer

    reward_fn = reward_function(args, tokenizer)
    dtype = "mixed_bfloat16" if args.precision == "bf16" else None
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        policy, reference = rl_run.load_policy_and_reference(policy_dir, dtype=dtype,
                                                             lora=(config.lora_rank, config.lora_alpha),
                                                             with_value_head=config.spec.critic)
    if policy.config.vocab_size != tokenizer.vocab_size:
        raise SftrlError(f"--policy {policy_dir}: model vocabulary {policy.config.vocab_size} != tokenizer "
                         f"vocabulary {tokenizer.vocab_size}")
    trainer = PPOTrainer(policy, reference, tokenizer, config, reward_fn, strategy=strategy)
    summary = rl_run.train(trainer, records, args.out, resume=args.resume, quiet=args.quiet, is_chief=is_chief)
    if "interrupted_at" in summary:
        if is_chief:
            sys.stderr.write(interrupted_message(f"iteration {summary['interrupted_at']}", summary["checkpoint"])
                             + "\n")
        return EXIT_INTERRUPTED
    if not is_chief:
        return 0
    print(f"done: {config.iterations} {config.algorithm.upper()} iterations; policy written to {args.out}/")
    if eval_records:
        evaluate_against_sft(policy, reference, eval_records, tokenizer, config, out)
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
    p.add_argument("--xla", action="store_true", help="XLA-compile the training step (jit_compile); off by "
                   "default: measured slower here (about 1.1x per step at the default sizes, plus ~12 s per "
                   "batch shape to compile on 2 CPU cores)")
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
                                 batch_size=args.batch_size, seed=args.seed, quiet=args.quiet, xla=args.xla)
    shown = ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if "accuracy" in k)
    print(f"reward model written to {args.out}/ ({shown})")
    return 0
