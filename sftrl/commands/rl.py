"""`sftrl rl` (= `sftrl ppo`; --algorithm picks PPO, GRPO, RLOO or REINFORCE): arguments -> policy,
prompts, reward -> tf_impl's RL trainer."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

from shared.algorithms import ALGORITHMS, RL_ALGORITHMS
from shared.config import PPOConfig
from shared.constants import LOSS_NORMALISATIONS
from shared.cpu import onednn_bf16_would_crash_tensorflow
from shared.errors import SftrlError
from shared.interrupt import EXIT_INTERRUPTED, interrupted_message
from sftrl.commands.common import REWARD_HELP, check_vocabulary, compare_on_held_out, reward_function
from sftrl.commands.flags import add_config_flags, config_from_args

# The PPOConfig fields that are flags of `sftrl rl` (--algorithm first), in the order of --help.
CONFIG_FLAGS = ("iterations", "batch_size", "group_size", "minibatch_size", "ppo_epochs", "lr", "max_new_tokens",
                "temperature", "top_k", "gamma", "lam", "clip_range", "clip_range_value", "vf_coef", "ent_coef",
                "kl_coef", "target_kl", "kl_horizon", "baseline_decay", "max_grad_norm", "save_every", "lora_rank",
                "lora_alpha", "lora_embeddings", "seed", "loss_normalisation", "whiten_rewards", "xla")
CHOICES = {"algorithm": RL_ALGORITHMS, "loss_normalisation": LOSS_NORMALISATIONS}
HELP = {
    "algorithm": "; ".join(f"{a.name}: {a.summary}" for a in ALGORITHMS.values())
                 + "; docs/guide.md, 'The policy-gradient family', compares them",
    "xla": "run the traced train, scoring and decoding steps without XLA (jit_compile): no compile in the first "
           "iteration but slower iterations after it, so only short runs finish sooner (`sftrl bench --suite ppo` "
           "measures both on your machine); XLA is off anyway with --distribute",
}


def add_arguments(p) -> None:
    add_config_flags(p, PPOConfig, ["algorithm"], HELP, choices=CHOICES)
    p.add_argument("--policy", required=True, help="the SFT model folder (causal): policy and frozen reference")
    p.add_argument("--prompts", required=True, help="JSONL of 'prompt' records to roll out on; every prompt "
                   "([CLS] and [SEP] included) plus --max-new-tokens must fit the policy's context "
                   "(max_position_embeddings), else the run is refused before training, naming FILE:LINE")
    p.add_argument("--eval-prompts", help="held-out prompts (the same length rule): greedy reward of the SFT and "
                   "the RL model, paired-bootstrap interval of the difference, written to eval.json")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--reward", default="task", help=f"{REWARD_HELP}; default: task")
    p.add_argument("--length-penalty", type=float, default=0.0, metavar="COEF",
                   help="subtract COEF per word beyond --max-words from every reward (default 0: off)")
    p.add_argument("--max-words", type=int, default=16, help="words allowed before the length penalty (default 16)")
    add_config_flags(p, PPOConfig, CONFIG_FLAGS, HELP, choices=CHOICES)
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
    """The run's PPOConfig, from its flags."""
    return config_from_args(PPOConfig, args)


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
    from shared.config import load_model_config
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
        raise SftrlError(f"--policy {policy_dir}: no tokenizer.json (expected an `sftrl sft` output folder or a "
                         "transformers model folder with its tokenizer)")
    tokenizer = Tokenizer.load(policy_dir / "tokenizer.json")
    if (policy_dir / "config.json").exists():
        try:
            context = load_model_config(policy_dir / "config.json").max_position_embeddings
        except SftrlError as e:
            raise SftrlError(f"--policy: {e}") from None
        check_prompts_fit(args.prompts, records, tokenizer, config.max_new_tokens, context, "--prompts",
                          "the policy's context")
        if eval_records:
            check_prompts_fit(args.eval_prompts, eval_records, tokenizer, config.max_new_tokens, context,
                              "--eval-prompts", "the policy's context")
    return config, records, eval_records, tokenizer


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

    reward_fn = reward_function(args.reward, tokenizer, args.length_penalty, args.max_words)
    dtype = "mixed_bfloat16" if args.precision == "bf16" else None
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        policy, reference = rl_run.load_policy_and_reference(policy_dir, dtype=dtype,
                                                             lora=(config.lora_rank, config.lora_alpha),
                                                             lora_embeddings=config.lora_embeddings,
                                                             with_value_head=config.spec.critic)
    check_vocabulary(policy.config, tokenizer, f"--policy {policy_dir}")
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
