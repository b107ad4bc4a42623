"""`sftrl eval`: every model on the same prompts, one table row per model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from shared.errors import SftrlError
from sftrl.reports.eval_table import format_table


def add_arguments(p) -> None:
    p.add_argument("--model", action="append", required=True, metavar="DIR",
                   help="a model folder (repeat for several; the first is the baseline for KL and differences)")
    p.add_argument("--prompts", required=True, help="JSONL of 'prompt' records (with 'reference' for "
                   "perplexity and BLEU, 'task' for per-task rewards)")
    p.add_argument("--refs", help="references, one per line (plain text), instead of the records' 'reference'")
    p.add_argument("--out", required=True, help="folder for eval.json and eval.md")
    p.add_argument("--max-new-tokens", type=int, default=16,
                   help="longest completion, greedy or sampled for the KL (default 16)")
    p.add_argument("--batch-size", type=int, default=64, help="prompts per batch (default 64)")
    p.add_argument("--kl-samples", type=int, default=4, metavar="K",
                   help="completions sampled per prompt from each model (temperature 1, as RL samples) for its "
                        "Monte-Carlo sequence KL to the first model, with a bootstrap interval over prompts; "
                        "0 turns the KL off (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap intervals and of the KL's samples "
                   "(default 0)")


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def load_inputs(args):
    """The prompts, their references (from the records or --refs) and every model with its
    tokenizer; a prompt a causal model cannot complete is an error, not a cut."""
    from shared.data import check_prompts_fit, load_jsonl
    from shared.tokenizer import Tokenizer
    from torch_impl.checkpoint import load_pretrained

    if args.max_new_tokens < 1 or args.batch_size < 1:
        raise SftrlError("--max-new-tokens and --batch-size must be >= 1")
    if args.kl_samples < 0:
        raise SftrlError(f"--kl-samples must be >= 0 (0 turns the KL off), got {args.kl_samples}")
    records = load_jsonl(args.prompts, "prompt")
    references = [r.get("reference") for r in records]
    if args.refs:
        lines = Path(args.refs).read_text(encoding="utf-8").splitlines() if Path(args.refs).is_file() else None
        if lines is None:
            raise SftrlError(f"--refs {args.refs}: no such file")
        if len(lines) != len(records):
            raise SftrlError(f"--refs {args.refs}: {len(lines)} lines for {len(records)} prompts in {args.prompts}")
        references = lines
    models, tokenizers = [], []
    for folder in args.model:
        models.append(load_pretrained(folder))
        tokenizers.append(Tokenizer.load(Path(folder) / "tokenizer.json"))
        if models[-1].config.is_causal:
            check_prompts_fit(args.prompts, records, tokenizers[-1], args.max_new_tokens,
                              models[-1].config.max_position_embeddings, "--prompts", f"the context of --model {folder}")
    if not models[0].config.is_causal and any(m.config.is_causal for m in models[1:]):
        raise SftrlError(f"--model {args.model[0]}: the first model is the baseline for KL and differences; "
                         "put a causal (generating) model first")
    return records, references, models, tokenizers


def masked_lm_row(folder, model, tokenizer, prompts, references, task_names, batch_size) -> dict:
    """A masked LM does not generate: what is defined for it, labelled as such."""
    from torch_impl.evaluate import pseudo_perplexity

    if any(r is None for r in references):
        raise SftrlError(f"--model {folder}: a masked-LM row needs references (--refs or 'reference')")
    texts = [f"{p} {r}" for p, r in zip(prompts, references)]
    pppl, masked_loss = pseudo_perplexity(model, tokenizer, texts, batch_size)
    return {"model": folder, "masked_lm": True, "pseudo_perplexity": pppl, "masked_token_loss": masked_loss,
            "exact_match": None, "partial_credit": None, "sequence_kl_to_first": None, "mean_length_words": None,
            "samples_per_s": None, **{f"{t}/{m}": None for t in task_names for m in ("exact_match", "partial_credit")}}


ESTIMATOR = ("Monte-Carlo E_x E_{y~model(.|x)} [sum_t KL(model || first)(.|x, y_<t)]: K completions per prompt "
             "sampled at temperature 1, ending at [SEP] or --max-new-tokens (the truncated completion distribution), "
             "exact per-token KL summed along each; mean over prompts of the per-prompt means; ci95: percentile "
             "bootstrap over prompts; nats per completion")


def sequence_kl_row(args, folder, model, tokenizer, prompts, baseline):
    """eval.json's `sequence_kl_to_first`: KL(model || first model) between their distributions
    over completions (`torch_impl.evaluate.mc_sequence_kl`), with a bootstrap interval over prompts.
    The first model's is 0 by definition; None when --kl-samples is 0."""
    from shared.metrics import bootstrap_mean
    from torch_impl.evaluate import mc_sequence_kl

    if args.kl_samples == 0:
        return None
    mean, low, high = 0.0, 0.0, 0.0  # the first model is the baseline
    if baseline is not None:
        first_model = baseline[0]
        if first_model.config.vocab_size != model.config.vocab_size:
            raise SftrlError(f"--model {folder}: vocabulary differs from the first model's; KL needs the same one")
        per_prompt, _ = mc_sequence_kl(model, first_model, tokenizer, prompts, args.max_new_tokens, args.kl_samples,
                                       args.seed, args.batch_size)
        mean, low, high = bootstrap_mean(per_prompt, seed=args.seed)
    return {"mean": mean, "ci95": [low, high], "samples_per_prompt": args.kl_samples, "estimator": ESTIMATOR}


def causal_row(args, folder, model, tokenizer, records, references, task_names, baseline):
    """Greedy completions scored per task, reference perplexity and BLEU, and -- against the
    baseline (the first model's model and per-prompt scores, None for the first) -- the Monte-Carlo
    sequence KL (`sequence_kl_row`) and paired-bootstrap differences. Returns (row, per-prompt scores)."""
    from shared.metrics import corpus_bleu, paired_bootstrap, perplexity
    from shared.tasks import task_scores
    from torch_impl.evaluate import reference_nll
    from torch_impl.generate import greedy_completions

    prompts = [r["prompt"] for r in records]
    started = time.perf_counter()
    texts, _ = greedy_completions(model, tokenizer, prompts, args.max_new_tokens, args.batch_size)
    exact, partial = task_scores(prompts, texts)
    row = {"model": folder, "samples_per_s": len(prompts) / (time.perf_counter() - started),
           "mean_length_words": float(np.mean([len(t.split()) for t in texts])),
           "exact_match": _mean(exact), "partial_credit": _mean(partial)}
    if all(r is not None for r in references):
        nll, counts = reference_nll(model, tokenizer, prompts, references, args.batch_size)
        row["reference_perplexity"] = perplexity(float(nll.sum()), int(counts.sum()))
        row["bleu"] = corpus_bleu(texts, [references]).score
    for task in task_names:
        chosen = [i for i, r in enumerate(records) if r.get("task") == task]
        row[f"{task}/exact_match"] = _mean([exact[i] for i in chosen])
        row[f"{task}/partial_credit"] = _mean([partial[i] for i in chosen])
    row["sequence_kl_to_first"] = sequence_kl_row(args, folder, model, tokenizer, prompts, baseline)
    if baseline is not None:
        first_scores = baseline[1]
        for name, values in (("exact_match", exact), ("partial_credit", partial)):
            base = first_scores[name]
            if None not in values and None not in base:
                diff, low, high = paired_bootstrap(base, values, seed=args.seed)
                row[f"{name}_difference"] = {"mean": diff, "ci95": [low, high]}
    return row, {"exact_match": exact, "partial_credit": partial, "completions": texts}


def run(args) -> int:
    from shared.io import atomic_write_text

    records, references, models, tokenizers = load_inputs(args)
    prompts = [r["prompt"] for r in records]
    task_names = sorted({r["task"] for r in records if r.get("task")})
    rows, per_prompt = [], []
    for folder, model, tokenizer in zip(args.model, models, tokenizers):
        if not model.config.is_causal:
            rows.append(masked_lm_row(folder, model, tokenizer, prompts, references, task_names, args.batch_size))
            continue
        baseline = (models[0], per_prompt[0]) if per_prompt else None
        row, scores = causal_row(args, folder, model, tokenizer, records, references, task_names, baseline)
        rows.append(row)
        per_prompt.append(scores)

    out = Path(args.out)
    report = {"prompts": args.prompts, "count": len(records), "max_new_tokens": args.max_new_tokens,
              "models": rows, "completions": {r["model"]: p["completions"]
                                              for r, p in zip([r for r in rows if not r.get("masked_lm")], per_prompt)}}
    atomic_write_text(out / "eval.json", json.dumps(report, indent=2) + "\n")
    markdown = format_table(rows, task_names)
    atomic_write_text(out / "eval.md", markdown + "\n")
    print(markdown)
    print(f"\nwritten: {out / 'eval.json'}, {out / 'eval.md'}")
    return 0
