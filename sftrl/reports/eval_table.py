"""The table of `sftrl eval` (eval.md), which the pipeline report shows too: one row per model."""

from __future__ import annotations


def format_table(rows, task_names) -> str:
    """Markdown: each generating model's scores (differences against the first, with intervals), the
    masked LMs' rows apart, then per task."""
    def fmt(value, digits=3):
        return "–" if value is None else f"{value:.{digits}f}"

    def kl_cell(kl):  # eval.json's sequence_kl_to_first: the Monte-Carlo sequence KL and its interval
        return "–" if kl is None else f"{kl['mean']:.3f} [{kl['ci95'][0]:.3f}, {kl['ci95'][1]:.3f}]"

    lines = ["| model | exact match | partial credit | Δ exact match vs first [95% CI] | reference ppl | BLEU | "
             "KL to first (MC, nats/seq) [95% CI] | mean length | samples/s |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in [r for r in rows if not r.get("masked_lm")]:
        d = r.get("exact_match_difference")
        delta = "(baseline)" if d is None else f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
        lines.append(f"| {r['model']} | {fmt(r['exact_match'])} | {fmt(r['partial_credit'])} | {delta} | "
                     f"{fmt(r.get('reference_perplexity'), 2)} | {fmt(r.get('bleu'), 1)} | "
                     f"{kl_cell(r.get('sequence_kl_to_first'))} | "
                     f"{fmt(r['mean_length_words'], 1)} | {fmt(r['samples_per_s'], 0)} |")
    masked = [r for r in rows if r.get("masked_lm")]
    if masked:
        lines += ["", "Masked LMs do not generate; their rows give what is defined for them (Salazar et al. 2020): "
                  "pseudo-perplexity, masking each token of prompt + reference in turn, and the masked-token loss.",
                  "", "| masked LM | pseudo-perplexity | masked-token loss (nats) |", "| --- | ---: | ---: |"]
        lines += [f"| {r['model']} | {r['pseudo_perplexity']:.2f} | {r['masked_token_loss']:.3f} |" for r in masked]
    rows = [r for r in rows if not r.get("masked_lm")]
    if task_names:
        lines += ["", "| model | " + " | ".join(f"{t} exact / partial" for t in task_names) + " |",
                  "| --- |" + " ---: |" * len(task_names)]
        for r in rows:
            cells = [f"{fmt(r[f'{t}/exact_match'])} / {fmt(r[f'{t}/partial_credit'])}" for t in task_names]
            lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
