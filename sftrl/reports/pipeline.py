"""report.md of a pipeline run: tables from eval.json, curves from metrics.jsonl, plots
(`sftrl.reports.plots`); and report.html, the same report as one self-contained page
(`sftrl.reports.html`)."""

from __future__ import annotations

import json
from pathlib import Path

from shared.io import atomic_write_text
from sftrl.reports.common import markdown_cell, read_jsonl, versions
from sftrl.reports.eval_table import format_table
from sftrl.reports.html import write_html
from sftrl.reports.plots import attention_heatmap, calibration, curves


REPORT = """# sftrl pipeline report (preset `{preset}`)

{pretraining}SFT of a {architecture} model in PyTorch{sft_init} on {sft_examples} labelled examples, then PPO in
TensorFlow on {ppo_prompts} prompts with the task's
verifier as reward and a KL penalty to the SFT model. Everything below is measured on the
{eval_prompts} held-out prompts of `data/prompt.eval.jsonl` (greedy decoding); differences are RL
minus SFT on the same prompts, with paired-bootstrap 95% intervals.

## Models

{findings}

{models_table}

RL − SFT, partial credit: {partial_difference}.

| statistical baseline (words seen once -> `<UNK>`), on `text.eval` | perplexity |
| --- | ---: |
| 2-gram, Laplace (add-one) | {laplace_ppl:.2f} per word |
| 3-gram, interpolated Kneser–Ney (discount 0.1) | {ngram_ppl:.2f} per word |

The n-gram perplexity is per whitespace word of whole texts; the neural "reference ppl" above is
per BPE token of the reference completions given the prompt. They are different units: read each
column against itself.

{reward_model}

## Curves

![SFT loss, PPO reward and KL](report_curves.png)

## Calibration

Expected calibration error of next-token predictions on the reference completions:
SFT {ece_sft:.3f}, RL {ece_rl:.3f}.

![reliability diagram](report_calibration.png)

## Attention

![attention of the SFT model, last layer, one example](report_attention.png)

## Samples

| prompt | reference | SFT | RL |
| --- | --- | --- | --- |
{samples}

## Commands

```
{commands}
```

## Versions

{versions}
"""


def model_findings(rl_row) -> str:
    """The section's opening lines, from RL's paired differences against SFT (`sftrl eval`'s row)."""
    from shared.findings import comparison_finding

    lines = []
    for key, measure in (("exact_match", "held-out exact match"), ("partial_credit", "held-out partial credit")):
        d = rl_row[f"{key}_difference"]
        lines.append("- **Finding:** " + comparison_finding("SFT", "RL", measure, d["mean"], *d["ci95"]) + ".")
    return "\n".join(lines)


def pretraining_numbers(out):
    """The pretraining stage's text and held-out loss (its metrics.jsonl), None if it did not run."""
    path = Path(out) / "pretrain" / "metrics.jsonl"
    if not path.exists():
        return None
    final = [r for r in read_jsonl(path) if "final/loss" in r]
    from shared.data import load_jsonl
    return {"texts": len(load_jsonl(Path(out) / "data" / "text.train.jsonl", "text")),
            "steps": max(r.get("step", 0) for r in read_jsonl(path)),
            "held_out_loss": final[-1]["final/loss"] if final else None}


def pretraining_line(out) -> str:
    numbers = pretraining_numbers(out)
    if numbers is None:
        return ""
    return (f"Causal-LM pretraining on {numbers['texts']:,} clean texts (no solved task instance; "
            f"{numbers['steps']} steps, held-out loss {numbers['held_out_loss']:.3f} per token), then ")


def reward_model_line(state) -> str:
    if state is None:
        return "No reward model in this preset (PPO's reward is the task's verifier)."
    return (f"Reward model (`reward_model/`): held-out pairwise accuracy "
            f"{state.get('eval/pairwise_accuracy', float('nan')):.3f} (training pairs {state['train/pairwise_accuracy']:.3f}).")


def ngram_baselines(out) -> tuple[float, float]:
    """Word-level perplexities on text.eval: (interpolated Kneser-Ney trigram, Laplace bigram);
    words seen once become <UNK>, so unseen words get probability mass."""
    from shared.data import load_jsonl
    from shared.metrics import NGramLM

    texts = [r["text"].split() for r in load_jsonl(out / "data" / "text.train.jsonl", "text")]
    held = [r["text"].split() for r in load_jsonl(out / "data" / "text.eval.jsonl", "text")]
    ngram_ppl = NGramLM(3, "kneser_ney", discount=0.1, unk_cutoff=2).fit(texts).perplexity(held)
    laplace_ppl = NGramLM(2, "laplace", unk_cutoff=2).fit(texts).perplexity(held)
    return ngram_ppl, laplace_ppl


ARCHITECTURE_NAMES = {"bert": "BERT-style (post-LN)", "gpt2": "GPT-2-style (pre-LN)",
                      "llama": "Llama-style (RMSNorm, rotary, SwiGLU)"}


def write_report(out, commands, preset):
    """report.md and its figures from the run's own files; returns the numbers for summary.json."""
    from shared.config import architecture_of
    from shared.data import load_jsonl
    from shared.tokenizer import Tokenizer
    from torch_impl.checkpoint import load_pretrained

    out = Path(out)
    evaluation = json.loads((out / "eval" / "eval.json").read_text())
    sft_row, rl_row = evaluation["models"]
    records = load_jsonl(out / "data" / "prompt.eval.jsonl", "prompt")
    prompts, references = [r["prompt"] for r in records], [r["reference"] for r in records]
    ngram_ppl, laplace_ppl = ngram_baselines(out)
    models = [load_pretrained(out / "sft"), load_pretrained(out / "ppo")]
    tokenizers = [Tokenizer.load(out / "sft" / "tokenizer.json"), Tokenizer.load(out / "ppo" / "tokenizer.json")]
    curves(out)
    attention_heatmap(out, models[0], tokenizers[0], prompts[0], references[0])
    eces = calibration(out, models, tokenizers, prompts, references)
    reward_model = (json.loads((out / "reward_model" / "trainer_state.json").read_text())
                    if (out / "reward_model" / "trainer_state.json").exists() else None)
    task_names = sorted({r["task"] for r in records if r.get("task")})
    rows_named = [{**sft_row, "model": "SFT (PyTorch)"}, {**rl_row, "model": "RL: PPO (TensorFlow)"}]
    completions = list(evaluation["completions"].values())
    pd = rl_row.get("partial_credit_difference", {"mean": float("nan"), "ci95": [float("nan")] * 2})
    env = versions()
    architecture = ARCHITECTURE_NAMES[architecture_of(models[0].config)]
    report = REPORT.format(
        preset=preset, architecture=architecture, sft_examples=len(load_jsonl(out / "data" / "sft.train.jsonl", "sft")),
        ppo_prompts=len(load_jsonl(out / "data" / "prompt.train.jsonl", "prompt")), eval_prompts=len(records),
        models_table=format_table(rows_named, task_names), findings=model_findings(rl_row),
        partial_difference=f"{pd['mean']:+.3f} [{pd['ci95'][0]:+.3f}, {pd['ci95'][1]:+.3f}]",
        laplace_ppl=laplace_ppl, ngram_ppl=ngram_ppl,
        pretraining=pretraining_line(out),
        sft_init="" if pretraining_numbers(out) else " from random weights (this preset skips pretraining)", reward_model=reward_model_line(reward_model), ece_sft=eces["SFT"], ece_rl=eces["RL"],
        samples="\n".join(f"| {markdown_cell(p)} | {markdown_cell(r)} | {markdown_cell(a)} | {markdown_cell(b)} |"
                          for p, r, a, b in list(zip(prompts, references, completions[0], completions[1]))[:10]),
        commands="\n".join(commands), versions=", ".join(f"{k} {v}" for k, v in env.items()))
    atomic_write_text(out / "report.md", report)
    write_html(out, report, f"sftrl pipeline report ({preset})")
    return {"architecture": architecture_of(models[0].config),
            "exact_match": {"sft": sft_row["exact_match"], "rl": rl_row["exact_match"],
                            "difference": rl_row["exact_match_difference"]["mean"],
                            "ci95": rl_row["exact_match_difference"]["ci95"]},
            "partial_credit": {"sft": sft_row["partial_credit"], "rl": rl_row["partial_credit"],
                               "difference": pd["mean"], "ci95": pd["ci95"]},
            "reference_perplexity": {"sft": sft_row.get("reference_perplexity"), "rl": rl_row.get("reference_perplexity")},
            "bleu": {"sft": sft_row.get("bleu"), "rl": rl_row.get("bleu")},
            "sequence_kl_to_sft": rl_row["sequence_kl_to_first"],
            "reward_model_accuracy": reward_model.get("eval/pairwise_accuracy") if reward_model else None,
            "pretraining": pretraining_numbers(out),
            "ngram": {"order": 3, "perplexity": ngram_ppl, "laplace_bigram_perplexity": laplace_ppl},
            "ece": eces, "versions": env}


def readme_table(summary: dict) -> str:
    """The headline table of `make run`, from its summary.json: `make results` writes it to
    docs/results/generated/main/headline.md, which the docs' home page includes."""
    def diff(m):
        return f"{m['difference']:+.3f} [{m['ci95'][0]:+.3f}, {m['ci95'][1]:+.3f}]"
    e, p, kl = summary["exact_match"], summary["partial_credit"], summary["sequence_kl_to_sft"]
    rows = [("held-out exact match", f"{e['sft']:.3f}", f"{e['rl']:.3f} ({diff(e)})"),
            ("partial credit", f"{p['sft']:.3f}", f"{p['rl']:.3f} ({diff(p)})")]
    if summary.get("reference_perplexity", {}).get("sft") is not None:
        ppl, bleu = summary["reference_perplexity"], summary["bleu"]
        rows.append(("reference perplexity (per token) / BLEU", f"{ppl['sft']:.2f} / {bleu['sft']:.1f}",
                     f"{ppl['rl']:.2f} / {bleu['rl']:.1f}"))
    if kl is not None:
        rows.append(("KL to SFT per completion (Monte-Carlo, nats)", "0",
                     f"{kl['mean']:.2f} [{kl['ci95'][0]:.2f}, {kl['ci95'][1]:.2f}]"))
    rows.append(("next-token ECE", f"{summary['ece']['SFT']:.3f}", f"{summary['ece']['RL']:.3f}"))
    if summary.get("reward_model_accuracy") is not None:
        rows.append(("reward model, held-out pairwise accuracy", "", f"{summary['reward_model_accuracy']:.3f}"))
    if pre := summary.get("pretraining"):
        rows.append((f"pretraining on {pre['texts']:,} clean texts, {pre['steps']} steps: held-out loss per token",
                     f"{pre['held_out_loss']:.3f}", ""))
    if ngram := summary.get("ngram"):
        rows.append(("word-level baselines on `text.eval`: Kneser–Ney trigram / Laplace bigram perplexity per word",
                     f"{ngram['perplexity']:.2f} / {ngram['laplace_bigram_perplexity']:.2f}", ""))
    if stages := summary.get("stage_seconds"):
        sft_side = [k for k in ("pretrain", "sft") if k in stages]
        rl_side = [k for k in ("reward model", "ppo") if k in stages]
        rows.append((f"wall seconds on this machine ({' + '.join(sft_side)}; {' + '.join(rl_side)}; the whole pipeline "
                     f"{summary['seconds']:.0f} s)", f"{sum(stages[k] for k in sft_side):.0f}",
                     f"{sum(stages[k] for k in rl_side):.0f}"))
    return "\n".join(["| | SFT (PyTorch) | RL: PPO (TensorFlow) |", "| --- | ---: | ---: |",
                      *[f"| {a} | {b} | {c} |" for a, b, c in rows]])


if __name__ == "__main__":  # python -m sftrl.reports.pipeline DIR: the headline table of DIR/summary.json
    import sys
    print(readme_table(json.loads((Path(sys.argv[1]) / "summary.json").read_text())))
