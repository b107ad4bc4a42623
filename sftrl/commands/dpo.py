"""`sftrl dpo`: arguments -> SFT model, preference pairs (from a file, or from the model's own
samples ranked by a verifier) -> torch_impl.dpo.train."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from shared.config import DPOConfig
from shared.errors import SftrlError
from shared.interrupt import EXIT_INTERRUPTED, interrupted_message
from sftrl.commands.common import check_vocabulary, compare_on_held_out, reward_function
from sftrl.commands.flags import add_config_flags, config_from_args

# The DPOConfig fields that are flags of `sftrl dpo`, in the order of --help.
CONFIG_FLAGS = ("beta", "steps", "batch_size", "lr", "weight_decay", "warmup_steps", "max_grad_norm", "max_length",
                "eval_every", "save_every", "keep_checkpoints", "seed", "epochs")


def add_arguments(p) -> None:
    p.add_argument("--policy", "--init", dest="policy", required=True,
                   help="the SFT model folder (causal; ours, or a transformers GPT-2, Llama, Qwen2 or Mistral "
                   "folder; --init is the same flag): the policy to train and the frozen reference")
    p.add_argument("--data", required=True, help="JSONL of 'preference' records (prompt, chosen, rejected); "
                   "with --pairs-from-samples, JSONL of 'prompt' records instead")
    p.add_argument("--eval-data", help="held-out preference records: eval/loss (the exported model is the one "
                   "with the best), eval/rewards/accuracies and margins")
    p.add_argument("--eval-prompts", help="held-out prompt records: greedy task reward of the SFT and the DPO "
                   "model, paired-bootstrap interval of the difference, written to OUT/eval.json")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--pairs-from-samples", type=int, metavar="N", help="build the pairs from the policy's own "
                   "samples: N completions of each --data prompt, ranked by --reward; the best and the worst "
                   "make a pair (prompts whose N samples all score alike are dropped). Written to OUT/pairs.jsonl")
    p.add_argument("--reward", default="task", help="the verifier that ranks samples for --pairs-from-samples "
                   "(as `sftrl rl --reward`; default task: partial credit)")
    p.add_argument("--max-new-tokens", type=int, default=16, help="longest sampled or evaluated completion "
                   "(default 16)")
    add_config_flags(p, DPOConfig, CONFIG_FLAGS)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out "
                   "(after Ctrl-C, a kill or a crash; the result is bitwise that of an uninterrupted run)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_config(args) -> DPOConfig:
    """The run's DPOConfig, from its flags."""
    return config_from_args(DPOConfig, args)


def load_inputs(args):
    """Everything a user can get wrong, checked before PyTorch is imported. Returns (config,
    records, eval records, eval prompts, tokenizer)."""
    from shared.data import load_jsonl
    from shared.io import latest_checkpoint
    from shared.tokenizer import Tokenizer

    config = build_config(args)
    if args.resume and latest_checkpoint(Path(args.out)) is None:
        raise SftrlError(f"--resume: no checkpoint in {Path(args.out) / 'checkpoints'} to resume from")
    if args.pairs_from_samples is not None and args.pairs_from_samples < 2:
        raise SftrlError(f"--pairs-from-samples: must be >= 2 (a pair needs two samples), got {args.pairs_from_samples}")
    if args.max_new_tokens < 1:
        raise SftrlError(f"--max-new-tokens: must be >= 1, got {args.max_new_tokens}")
    policy_dir = Path(args.policy)
    if not (policy_dir / "tokenizer.json").exists():
        raise SftrlError(f"--policy {policy_dir}: no tokenizer.json (expected an `sftrl sft` output folder)")
    records = load_jsonl(args.data, "prompt" if args.pairs_from_samples else "preference")
    eval_records = load_jsonl(args.eval_data, "preference") if args.eval_data else []
    eval_prompts = load_jsonl(args.eval_prompts, "prompt") if args.eval_prompts else []
    return config, records, eval_records, eval_prompts, Tokenizer.load(policy_dir / "tokenizer.json")


def sampled_pairs(args, model, tokenizer, records, out: Path) -> list[dict]:
    """--pairs-from-samples: OUT/pairs.jsonl if a resumed run wrote it, else sampled and written."""
    from shared.io import atomic_write_text
    from torch_impl.dpo import pairs_from_samples

    path = out / "pairs.jsonl"
    if args.resume and path.exists():
        return [json.loads(line) for line in path.read_text().splitlines()]
    reward = reward_function(args.reward, tokenizer)
    pairs, stats = pairs_from_samples(model, tokenizer, records, args.pairs_from_samples, reward, args.max_new_tokens,
                                      build_config(args).seed)
    print(f"pairs from samples: {stats['samples']} samples of {stats['prompts']} prompts (mean score "
          f"{stats['mean_sample_score']:.3f}) -> {stats['pairs']} pairs (best vs worst of each prompt)")
    if not pairs:
        raise SftrlError(f"--pairs-from-samples {args.pairs_from_samples}: every prompt's samples scored alike; "
                         "no pair to learn from (more samples, or a shaped --reward, would give some)")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "".join(json.dumps(p) + "\n" for p in pairs))
    return pairs


def run(args) -> int:
    config, records, eval_records, eval_prompts, tokenizer = load_inputs(args)
    out = Path(args.out)

    import torch

    from torch_impl import dpo
    from torch_impl.checkpoint import load_pretrained

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SftrlError("--device cuda: no CUDA device is available here")
    policy, reference = load_pretrained(args.policy), load_pretrained(args.policy)
    if not policy.config.is_causal:
        raise SftrlError(f"--policy {args.policy}: a bidirectional (masked-LM) model cannot score completions "
                         "left to right; train the SFT model with --objective clm")
    check_vocabulary(policy.config, tokenizer, f"--policy {args.policy}")
    if args.pairs_from_samples:
        records = sampled_pairs(args, reference, tokenizer, records, out)
    max_length = min(config.max_length, policy.config.max_position_embeddings)
    pairs, truncated = dpo.encode_pairs(records, tokenizer, max_length)
    eval_pairs = dpo.encode_pairs(eval_records, tokenizer, max_length)[0]
    if truncated:
        print(f"warning: {truncated} of {len(pairs)} pairs were longer than {max_length} tokens and were truncated")
    summary = dpo.train(policy, reference.to(args.device), tokenizer, pairs, eval_pairs, config, out,
                        device=args.device, quiet=args.quiet, resume=args.resume)
    if "interrupted_at" in summary:
        sys.stderr.write(interrupted_message(f"step {summary['interrupted_at']}", summary["checkpoint"]) + "\n")
        return EXIT_INTERRUPTED
    final = summary["metrics"]
    print(f"done: {summary['step']} DPO steps in {summary['train_seconds']} s; model written to {out}/")
    if final:
        print("held-out pairs: " + ", ".join(f"{k[5:]}={v:.4f}" for k, v in sorted(final.items())))
    if eval_prompts:
        evaluate_against_sft(load_pretrained(out), reference, eval_prompts, tokenizer, args, out)
    return 0


def evaluate_against_sft(model, reference, eval_prompts, tokenizer, args, out) -> None:
    """Greedy completions of the held-out prompts by SFT and DPO, compared; OUT/eval.json."""
    from shared.io import atomic_write_text
    from torch_impl.generate import greedy_completions

    prompts = [r["prompt"] for r in eval_prompts]
    sft, new = (greedy_completions(m, tokenizer, prompts, args.max_new_tokens, batch_size=128)[0]
                for m in (reference, model))
    report = compare_on_held_out(prompts, sft, new, build_config(args).seed, "DPO")
    atomic_write_text(out / "eval.json", json.dumps(report, indent=2) + "\n")
