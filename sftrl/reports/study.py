"""The study's report.md, report.html and summary.json, computed from the run folders' own files
(eval/eval.json, each run's metrics.jsonl and trainer_state.json, stage_seconds.json) -- never
from numbers held in memory, so a test can change a file and see the report follow.

Each section is a function of `Study` (the folders) returning a `Section`: its findings (one line
each, from shared/findings.py), its Markdown and its numbers. A section whose runs are missing
says which, so an interrupted study still reports what finished.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.config import PPOConfig
from shared.findings import comparison_finding, difference_finding, interval
from shared.io import atomic_write_text
from shared.random_streams import generator
from shared.tasks import TASKS
from sftrl.reports.common import pyplot, read_jsonl, versions
from sftrl.reports.html import write_html

FAMILY = (("rl_ppo", "PPO"), ("rl_grpo", "GRPO"), ("rl_rloo", "RLOO"), ("rl_reinforce", "REINFORCE"), ("dpo", "DPO"))


@dataclass
class Section:
    title: str
    seed: str                       # the seed document's chapters it answers
    findings: list = field(default_factory=list)
    body: str = ""
    numbers: dict = field(default_factory=dict)


def _fmt(value, digits=3):
    return "–" if value is None else f"{value:.{digits}f}"


class Study:
    """The study's folders, read lazily; per-prompt scores recomputed from eval.json's completions."""

    def __init__(self, out):
        from shared.data import load_jsonl

        self.out = Path(out)
        path = self.out / "eval" / "eval.json"
        self.evaluation = json.loads(path.read_text()) if path.exists() else None
        self.records = load_jsonl(self.out / "data" / "prompt.eval.jsonl", "prompt") \
            if (self.out / "data" / "prompt.eval.jsonl").exists() else []
        self.prompts = [r["prompt"] for r in self.records]
        self._scores = {}

    def evaluated(self, *names) -> bool:
        return self.evaluation is not None and all(self.row(n) is not None for n in names)

    def missing(self, *names) -> list[str]:
        return [n for n in names if not self.evaluated(n)]

    def row(self, name):
        for r in (self.evaluation or {"models": []})["models"]:
            if Path(r["model"]).name == name:
                return r
        return None

    def scores(self, name, metric):
        """Per-prompt scores of one model on the held-out prompts (np.array)."""
        from shared.tasks import task_scores

        if name not in self._scores:
            completions = next(c for m, c in self.evaluation["completions"].items() if Path(m).name == name)
            exact, partial = task_scores(self.prompts, completions)
            self._scores[name] = {"exact_match": np.array(exact, float), "partial_credit": np.array(partial, float)}
        return self._scores[name][metric]

    def compare(self, first, second, metric="exact_match", task=None):
        """Paired bootstrap of second - first on the held-out prompts (of one task if given)."""
        from shared.metrics import paired_bootstrap

        keep = np.array([task is None or r.get("task") == task for r in self.records])
        return paired_bootstrap(self.scores(first, metric)[keep], self.scores(second, metric)[keep])

    def metrics(self, name):
        path = self.out / name / "metrics.jsonl"
        return read_jsonl(path) if path.exists() else []

    def state(self, name):
        path = self.out / name / "trainer_state.json"
        return json.loads(path.read_text()) if path.exists() else {}


def not_run(section: Section, names) -> Section:
    section.body = "Not run yet: " + ", ".join(f"`{n}`" for n in names) + \
        " (the study stopped before them; `--resume` finishes it)."
    return section


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt
    plt.close(fig)


# ----------------------------------------------------------------------------- sections

def main_comparison(st: Study, seeds) -> Section:
    s = Section("SFT against RL, three seeds", "§1.2.3, §9.1")
    pairs = [("sft", "rl_ppo")] + [(f"sft_seed{k}", f"rl_ppo_seed{k}") for k in seeds[1:]]
    missing = st.missing(*[n for p in pairs for n in p])
    if missing:
        return not_run(s, missing)
    rows, per_seed = [], []
    for seed, (a, b) in zip(seeds, pairs):
        e, p = st.compare(a, b), st.compare(a, b, "partial_credit")
        per_seed.append({"seed": seed, "sft": st.row(a)["exact_match"], "rl": st.row(b)["exact_match"],
                         "difference": e, "partial_difference": p, "kl": st.row(b)["kl_to_first"] if a == "sft" else None})
        rows.append(f"| {seed} | {st.row(a)['exact_match']:.3f} | {st.row(b)['exact_match']:.3f} | {interval(*e)} | "
                    f"{st.row(a)['partial_credit']:.3f} | {st.row(b)['partial_credit']:.3f} | {interval(*p)} |")
    sft = np.array([r["sft"] for r in per_seed])
    rl = np.array([r["rl"] for r in per_seed])
    diff = rl - sft
    above = sum(r["difference"][1] > 0 for r in per_seed)
    first = per_seed[0]["difference"]
    s.findings = [comparison_finding("SFT", "RL (PPO)", "held-out exact match", *first) + " (seed 0)",
                  f"over {len(seeds)} seeds, RL - SFT exact match is {diff.mean():+.3f} ± {diff.std(ddof=1):.3f} "
                  f"(mean ± std); the interval lay above 0 in {above} of {len(seeds)} seeds"]
    s.body = "\n".join([
        "Each seed trains its own SFT model (from the same pretrained model) and its own PPO run from it; "
        "differences are paired-bootstrap 95 % intervals over the held-out prompts.", "",
        "| seed | SFT exact | RL exact | RL − SFT exact [95% CI] | SFT partial | RL partial | RL − SFT partial [95% CI] |",
        "| ---: | ---: | ---: | --- | ---: | ---: | --- |", *rows,
        f"| mean ± std | {sft.mean():.3f} ± {sft.std(ddof=1):.3f} | {rl.mean():.3f} ± {rl.std(ddof=1):.3f} | "
        f"{diff.mean():+.3f} ± {diff.std(ddof=1):.3f} | | | |"])
    s.numbers = {"seeds": per_seed, "exact_match": {"sft_mean": sft.mean(), "sft_std": sft.std(ddof=1),
                                                    "rl_mean": rl.mean(), "rl_std": rl.std(ddof=1),
                                                    "difference_mean": diff.mean(), "difference_std": diff.std(ddof=1)}}
    return s


def rl_family(st: Study, figure) -> Section:
    s = Section("The RL family against SFT: PPO, GRPO, RLOO, REINFORCE, DPO", "§3.2, §9.1")
    present = [(n, label) for n, label in FAMILY if st.evaluated(n)]
    if not st.evaluated("sft") or not present:
        return not_run(s, st.missing("sft", *[n for n, _ in FAMILY]))
    seconds = _stage_seconds(st.out)
    rows, numbers = [], {}
    for name, label in present:
        e, p = st.compare("sft", name), st.compare("sft", name, "partial_credit")
        numbers[label] = {"exact_match_difference": e, "partial_credit_difference": p, "kl": st.row(name)["kl_to_first"],
                          "seconds": seconds.get(name)}
        s.findings.append(comparison_finding("SFT", label, "held-out exact match", *e))
        rows.append(f"| {label} | `{name}/` | {st.row(name)['exact_match']:.3f} | {interval(*e)} | {interval(*p)} | "
                    f"{st.row(name)['kl_to_first']:.2f} | {_fmt(seconds.get(name), 0)} |")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    labels = [label for _, label in present]
    means = [numbers[label]["exact_match_difference"][0] for label in labels]
    errors = np.array([[m - numbers[label]["exact_match_difference"][1],
                        numbers[label]["exact_match_difference"][2] - m] for m, label in zip(means, labels)]).T
    ax.bar(labels, means, yerr=errors, capsize=4, color="tab:blue")
    ax.axhline(0, color="k", lw=0.8)
    ax.set(ylabel="exact match, method − SFT", title="Held-out gain over SFT (95% CI)")
    _save(fig, st.out / figure)
    s.body = "\n".join([
        "Every method starts from the same SFT model (`sft/`) and trains on the same prompts with the task's "
        "verifier (partial credit); DPO on pairs of its own samples ranked by the verifier. Flags in the commands below.", "",
        "| method | folder | exact match | − SFT exact [95% CI] | − SFT partial [95% CI] | KL to SFT | wall s |",
        "| --- | --- | ---: | --- | --- | ---: | ---: |", *rows, "", f"![gain over SFT per method]({figure})"])
    s.numbers = numbers
    return s


def pretraining(st: Study) -> Section:
    s = Section("Pretraining: SFT and RL from a pretrained model or from random weights", "§2.1.3, §3.1.2")
    needed = ("sft", "sft_scratch", "rl_reward_partial", "rl_scratch")
    if missing := st.missing(*needed):
        return not_run(s, missing)
    loss = {n: st.state(n)["best_eval_loss"] for n in ("sft", "sft_scratch")}
    nll = {n: _reference_nll(st, n) for n in ("sft", "sft_scratch")}
    from shared.metrics import paired_bootstrap
    d_loss = paired_bootstrap(nll["sft_scratch"], nll["sft"])
    e_sft, p_sft = st.compare("sft_scratch", "sft"), st.compare("sft_scratch", "sft", "partial_credit")
    gain_pre, gain_scratch = st.compare("sft", "rl_reward_partial"), st.compare("sft_scratch", "rl_scratch")
    e_rl = st.compare("rl_scratch", "rl_reward_partial")
    pre = st.state("pretrain")
    s.findings = [difference_finding("pretraining", "SFT's held-out loss per token", *d_loss, higher_is_better=False),
                  difference_finding("pretraining", "SFT's held-out exact match", *e_sft),
                  difference_finding("pretraining (before SFT and RL)", "RL's held-out exact match", *e_rl)]
    s.body = "\n".join([
        f"`pretrain/`: causal LM on {_count(st.out / 'data' / 'text.train.jsonl'):,} unlabelled texts, "
        f"{pre.get('step', '?')} steps, held-out loss {_fmt(pre.get('best_eval_loss'))} per token. `sft_scratch/` has the same "
        "tokenizer and architecture and starts from random weights. The RL rows are the same short PPO run from each.", "",
        "| | from pretrained | from random weights | pretrained − random [95% CI] |", "| --- | ---: | ---: | --- |",
        f"| SFT held-out loss per token (best evaluation on `sft.eval`) | {loss['sft']:.3f} | {loss['sft_scratch']:.3f} | – |",
        f"| SFT loss per token on the held-out prompts' references | {nll['sft'].mean():.3f} | {nll['sft_scratch'].mean():.3f} | "
        f"{interval(*d_loss)} |",
        f"| SFT exact match | {st.row('sft')['exact_match']:.3f} | {st.row('sft_scratch')['exact_match']:.3f} | {interval(*e_sft)} |",
        f"| SFT partial credit | {st.row('sft')['partial_credit']:.3f} | {st.row('sft_scratch')['partial_credit']:.3f} | "
        f"{interval(*p_sft)} |",
        f"| RL exact match | {st.row('rl_reward_partial')['exact_match']:.3f} | {st.row('rl_scratch')['exact_match']:.3f} | "
        f"{interval(*e_rl)} |",
        f"| RL − its SFT, exact match | {interval(*gain_pre)} | {interval(*gain_scratch)} | – |"])
    s.numbers = {"sft_best_eval_loss": loss, "reference_loss_difference": d_loss, "sft_exact_match_difference": e_sft,
                 "rl_exact_match_difference": e_rl, "rl_gain": {"pretrained": gain_pre, "scratch": gain_scratch}}
    return s


def architectures(st: Study) -> Section:
    s = Section("Architectures: BERT-style, GPT-2-style and Llama-style models of one size", "§7.2.2")
    names = {"bert": ("sft_scratch", "rl_scratch"), "gpt2": ("sft_gpt2", "rl_gpt2"), "llama": ("sft_llama", "rl_llama")}
    labels = {"bert": "BERT-style (post-LN, learned positions)", "gpt2": "GPT-2-style (pre-LN, learned positions)",
              "llama": "Llama-style (RMSNorm, rotary positions, SwiGLU)"}
    if missing := st.missing(*(n for pair in names.values() for n in pair)):
        return not_run(s, missing)
    sft_vs = {a: st.compare("sft_scratch", names[a][0]) for a in ("gpt2", "llama")}
    rl_vs = {a: st.compare("rl_scratch", names[a][1]) for a in ("gpt2", "llama")}
    gain = {a: st.compare(*names[a]) for a in names}
    short = {"gpt2": "the GPT-2-style model", "llama": "the Llama-style model"}
    s.findings = [comparison_finding("the BERT-style model", short[a], "SFT's held-out exact match", *sft_vs[a])
                  for a in ("gpt2", "llama")]
    s.findings += [comparison_finding("the BERT-style model", short[a], "RL's held-out exact match", *rl_vs[a])
                   for a in ("gpt2", "llama")]
    s.body = "\n".join([
        "Each from random weights, with the pretraining run's tokenizer, 2 layers of width 128 and 4 heads (Llama's "
        "SwiGLU width 344 holds as many weights as the others' 512), the same SFT flags, then the same short PPO run "
        "with the task's partial-credit reward. Only the architecture differs. The flags are those chosen for the "
        "BERT-style model; the decoders get no tuning of their own, so the rows compare the architectures at BERT's "
        "settings, not each at its best.", "",
        "| architecture | parameters | SFT held-out loss | SFT exact match | RL exact match | RL − SFT, exact match [95% CI] |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
        *[f"| {labels[a]} | {_parameters(st.out / names[a][0]) or 0:,} | {_fmt(st.state(names[a][0]).get('best_eval_loss'))} | "
          f"{st.row(names[a][0])['exact_match']:.3f} | {st.row(names[a][1])['exact_match']:.3f} | {interval(*gain[a])} |"
          for a in names],
        "", "Against the BERT-style model (paired on the held-out prompts): " + "; ".join(
            f"{a}: SFT {interval(*sft_vs[a])}, RL {interval(*rl_vs[a])}" for a in ("gpt2", "llama")) + "."])
    s.numbers = {"sft_exact_match_vs_bert": sft_vs, "rl_exact_match_vs_bert": rl_vs, "rl_gain": gain,
                 "exact_match": {a: {"sft": st.row(names[a][0])["exact_match"], "rl": st.row(names[a][1])["exact_match"]}
                                 for a in names}}
    return s


def lora(st: Study) -> Section:
    s = Section("LoRA against full fine-tuning", "§2.2.3")
    if missing := st.missing("sft", "sft_lora"):
        return not_run(s, missing)
    full, low = st.state("sft"), st.state("sft_lora")
    e, p = st.compare("sft", "sft_lora"), st.compare("sft", "sft_lora", "partial_credit")
    step = {n: st.state(n)["train_seconds"] / st.state(n)["step"] for n in ("sft", "sft_lora")}
    rank = low["config"]["lora_rank"]
    s.findings = [comparison_finding("full fine-tuning", f"LoRA (rank {rank})", "held-out exact match", *e),
                  f"LoRA trained {low['trainable_parameters']:,} of {low['total_parameters']:,} parameters "
                  f"({low['trainable_parameters'] / low['total_parameters']:.2%}) at {step['sft_lora'] / step['sft']:.2f}× "
                  "full fine-tuning's step time"]
    s.body = "\n".join([
        "Both from the pretrained model, same data and steps; LoRA adapts the attention projections (query, key, "
        f"value) only, rank {rank}, lr {low['config']['lr']:g} (full: lr {full['config']['lr']:g}); embeddings, "
        "feed-forward layers and the LM head stay as pretraining left them. Step time: the run's training seconds "
        "(its evaluations included) per step.", "",
        "| | trainable parameters | ms per step | held-out loss | exact match | partial credit |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *[f"| {label} | {st.state(n)['trainable_parameters']:,} | {1000 * step[n]:.1f} | {st.state(n)['best_eval_loss']:.3f} | "
          f"{st.row(n)['exact_match']:.3f} | {st.row(n)['partial_credit']:.3f} |"
          for n, label in (("sft", "full"), ("sft_lora", f"LoRA rank {rank}"))],
        "", f"LoRA − full: exact match {interval(*e)}, partial credit {interval(*p)}."])
    s.numbers = {"exact_match_difference": e, "partial_credit_difference": p,
                 "trainable_parameters": {"full": full["trainable_parameters"], "lora": low["trainable_parameters"]},
                 "step_seconds": step}
    return s


def multi_task(st: Study) -> Section:
    s = Section("One multi-task model against one model per task", "§2.2.2, §3.1.4")
    names = [f"sft_task_{t}" for t in TASKS]
    if missing := st.missing("sft", *names):
        return not_run(s, missing)
    rows, numbers = [], {}
    for task, name in zip(TASKS, names):
        e = st.compare("sft", name, task=task)
        numbers[task] = {"multi_task": st.row("sft")[f"{task}/exact_match"], "per_task": st.row(name)[f"{task}/exact_match"],
                         "difference": e}
        s.findings.append(comparison_finding("the multi-task model", f"the {task}-only model", f"{task} exact match", *e))
        rows.append(f"| {task} | {st.row('sft')[f'{task}/exact_match']:.3f} | {st.row(name)[f'{task}/exact_match']:.3f} | "
                    f"{interval(*e)} |")
    steps = st.state("sft")["step"]
    s.body = "\n".join([
        f"Each model gets the multi-task model's {steps} steps and batch size (so the four specialists together "
        "cost four times its compute, each seeing only its task's examples); scores on the held-out prompts of that task.", "",
        "| task | multi-task exact | per-task exact | per-task − multi-task [95% CI] |", "| --- | ---: | ---: | --- |", *rows])
    s.numbers = numbers
    return s


def reward_design(st: Study) -> Section:
    s = Section("Reward design: shaped against sparse, verifier against a learned reward model", "§3.2.2, §9.4")
    names = ("sft", "rl_reward_partial", "rl_reward_exact", "rl_reward_model")
    if missing := st.missing(*names):
        return not_run(s, missing)
    labels = {"rl_reward_partial": "verifier, shaped (partial credit)", "rl_reward_exact": "verifier, sparse (exact match)",
              "rl_reward_model": "learned reward model (`reward_model/`)"}
    rows, numbers = [], {}
    for name, label in labels.items():
        e, p = st.compare("sft", name), st.compare("sft", name, "partial_credit")
        numbers[name] = {"exact_match_difference": e, "partial_credit_difference": p, "kl": st.row(name)["kl_to_first"]}
        rows.append(f"| {label} | {st.row(name)['exact_match']:.3f} | {interval(*e)} | {st.row(name)['partial_credit']:.3f} | "
                    f"{interval(*p)} | {st.row(name)['kl_to_first']:.2f} |")
    shaped = st.compare("rl_reward_exact", "rl_reward_partial")
    verifier = st.compare("rl_reward_model", "rl_reward_partial")
    s.findings = [comparison_finding("the sparse reward", "the shaped reward", "held-out exact match", *shaped),
                  comparison_finding("the reward model", "the verifier", "held-out exact match", *verifier)]
    accuracy = st.state("reward_model").get("eval/pairwise_accuracy")
    s.body = "\n".join([
        f"The same PPO run (flags below) from `sft/`, three rewards. The reward model's held-out pairwise accuracy: {_fmt(accuracy)}. "
        "Scores are the verifier's (gold) on held-out prompts.", "",
        "| reward | exact match | − SFT [95% CI] | partial credit | − SFT [95% CI] | KL to SFT |",
        "| --- | ---: | --- | ---: | --- | ---: |", *rows, "",
        f"shaped − sparse, exact match: {interval(*shaped)}; verifier − reward model, exact match: {interval(*verifier)}."])
    numbers.update(shaped_minus_sparse=shaped, verifier_minus_reward_model=verifier)
    s.numbers = numbers
    return s


def over_optimisation(st: Study, betas, figure) -> Section:
    """The reward model as a proxy: its score against the verifier's (gold) along training, and the
    end of each run of a sweep of the KL coefficient."""
    s = Section("Reward over-optimisation and the reward-KL frontier", "§3.2.2")
    sweep = (("rl_rm_beta_low", betas[0]), ("rl_reward_model", betas[1]), ("rl_rm_beta_high", betas[2]))
    names = [n for n, _ in sweep]
    if missing := st.missing("sft", *names):
        return not_run(s, missing)
    curve = st.metrics("rl_rm_beta_low")
    kl = np.array([r["objective/kl"] for r in curve])
    proxy = np.array([r["objective/scores"] for r in curve])
    gold = np.array([r["objective/gold_partial"] for r in curve])
    w = max(1, len(curve) // 8)                       # a moving average over an eighth of the run
    smooth = lambda x: np.convolve(x, np.ones(w) / w, mode="valid")  # noqa: E731
    kl_s, proxy_s, gold_s = smooth(kl), smooth(proxy), smooth(gold)
    peak = int(np.argmax(gold_s))
    # Over-optimisation: after the gold score's peak, the gold score fell and the proxy rose, each by
    # more than twice the standard error of a window's mean (from the last window's spread).
    if w >= 3:
        gold_noise, proxy_noise = (2 * x[-w:].std(ddof=1) / np.sqrt(w) for x in (gold, proxy))
        fell = gold_s[peak] - gold_s[-1] > gold_noise and proxy_s[-1] - proxy_s[peak] > proxy_noise
        verdict = ("over-optimisation: after the peak the gold score fell while the proxy rose" if fell else
                   f"no over-optimisation in this run: after the peak the gold score did not fall by more than "
                   f"{gold_noise:.3f} while the proxy rose by more than {proxy_noise:.3f} (2 standard errors)")
    else:
        fell, verdict = False, f"too few iterations ({len(curve)}) to tell over-optimisation from noise"
    s.findings = [
        f"against the reward model with β = {betas[0]:g}, as KL to SFT went from {kl_s[0]:.2f} to {kl_s[-1]:.2f} the proxy "
        f"(reward-model) score went from {proxy_s[0]:.3f} to {proxy_s[-1]:.3f} and the gold (verifier) score from "
        f"{gold_s[0]:.3f} to {gold_s[-1]:.3f}, peaking at {gold_s[peak]:.3f} (KL {kl_s[peak]:.2f}): {verdict}"]
    rows, frontier = [], []
    for name, beta in sweep:
        p = st.compare("sft", name, "partial_credit")
        last = st.metrics(name)[-w:]
        proxy_end = float(np.mean([r["objective/scores"] for r in last]))
        frontier.append((st.row(name)["kl_to_first"], st.row(name)["partial_credit"], proxy_end, beta))
        rows.append(f"| {beta:g} | `{name}/` | {st.row(name)['kl_to_first']:.2f} | {proxy_end:.3f} | "
                    f"{st.row(name)['partial_credit']:.3f} | {interval(*p)} |")
        s.findings.append(difference_finding(f"training against the reward model at β = {beta:g}",
                                             "held-out gold partial credit", *p))
    _overoptimisation_figure(st.out / figure, betas[0], w, kl_s, proxy_s, gold_s, peak, np.array(sorted(frontier)))
    s.body = "\n".join([
        "PPO against the learned reward model, with the verifier's score of the same samples logged beside it "
        "(`objective/gold_partial` in each run's metrics.jsonl).", "",
        "| β (KL coefficient) | run | held-out KL to SFT | proxy score, last samples | held-out gold partial | "
        "gold − SFT [95% CI] |", "| ---: | --- | ---: | ---: | ---: | --- |", *rows, "", f"![over-optimisation]({figure})"])
    s.numbers = {"curve": {"kl": kl_s.tolist(), "proxy": proxy_s.tolist(), "gold": gold_s.tolist()},
                 "gold_peak": {"score": float(gold_s[peak]), "kl": float(kl_s[peak])}, "fell": bool(fell),
                 "frontier": [dict(zip(("kl", "gold", "proxy", "beta"), map(float, row))) for row in sorted(frontier)]}
    return s


def _overoptimisation_figure(path, beta, window, kl, proxy, gold, peak, frontier):
    """Left: proxy and gold score along training against KL; right: the end of each run of the sweep
    (frontier rows: KL, held-out gold, last proxy, beta)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    axes[0].plot(kl, proxy, label="proxy: reward model")
    axes[0].plot(kl, gold, label="gold: verifier (partial credit)")
    axes[0].axvline(kl[peak], color="gray", ls=":", lw=0.8)
    axes[0].set(xlabel="KL(policy || SFT) per completion (nats)", ylabel="mean score of samples",
                title=f"Along training, β = {beta:g} (moving average of {window})")
    axes[0].legend(fontsize=8)
    axes[1].plot(frontier[:, 0], frontier[:, 1], "o-", label="gold, held-out greedy")
    axes[1].plot(frontier[:, 0], frontier[:, 2], "s--", label="proxy, last samples")
    for x, y, _, b in frontier:
        axes[1].annotate(f"β={b:g}", (x, y), fontsize=8, textcoords="offset points", xytext=(4, 4))
    axes[1].set(xlabel="KL to SFT (held-out, exact)", ylabel="score", title="Reward-KL frontier over β")
    axes[1].legend(fontsize=8)
    _save(fig, path)


def same_budget(st: Study) -> Section:
    s = Section("When to pick SFT or RL: the same compute, the same labels", "§1.2.3, §9.1")
    names = ("sft", "sft_compute", "rl_ppo", "sft_labels")
    if missing := st.missing(*names):
        return not_run(s, missing)
    seconds = _stage_seconds(st.out)
    labelled = {"sft": _count(st.out / "data" / "sft.train.jsonl"), "sft_compute": _count(st.out / "data" / "sft.train.jsonl"),
                "rl_ppo": _count(st.out / "data" / "sft.train.jsonl"), "sft_labels": _count(st.out / "data" / "sft.rl_prompts.jsonl")}
    describe = {"sft": f"SFT, {st.state('sft')['step']} steps", "sft_compute": f"SFT, {st.state('sft_compute')['step']} steps "
                "(RL's wall time)", "rl_ppo": "SFT then RL (PPO) on unlabelled prompts with a verifier",
                "sft_labels": "SFT on the RL prompts' references (every prompt labelled)"}
    rows = []
    for name in names:
        d = st.compare("rl_ppo", name) if name != "rl_ppo" else None
        rows.append(f"| {describe[name]} | {labelled[name]:,} | {_fmt(seconds.get(name), 0)} | {st.row(name)['exact_match']:.3f} | "
                    f"{'–' if d is None else interval(*d)} |")
    compute = st.compare("sft_compute", "rl_ppo")
    labels = st.compare("rl_ppo", "sft_labels")
    s.findings = [comparison_finding("SFT given RL's compute", "RL", "held-out exact match", *compute),
                  comparison_finding("RL", f"SFT with {labelled['sft_labels']:,} labels", "held-out exact match", *labels)]
    s.body = "\n".join([
        "RL needs prompts and a verifier, not labels. Given the same wall time, is more SFT on the same labels as good? "
        "And SFT with every RL prompt labelled (the label-rich upper bound) against RL.", "",
        "| model | labelled examples | wall s | exact match | − RL [95% CI] |", "| --- | ---: | ---: | ---: | --- |", *rows])
    s.numbers = {"rl_minus_sft_same_compute": compute, "sft_labels_minus_rl": labels}
    return s


def calibration(st: Study, figure) -> Section:
    s = Section("Calibration before and after temperature scaling", "§8.3.2")
    if missing := st.missing("sft", "rl_ppo"):
        return not_run(s, missing)
    from shared.data import load_jsonl
    from shared.metrics import expected_calibration_error, fit_temperature, temperature_nll, top_confidences
    from shared.tokenizer import Tokenizer
    from torch_impl.checkpoint import load_pretrained
    from torch_impl.evaluate import next_token_logits

    fit_records = load_jsonl(st.out / "data" / "sft.eval.jsonl", "sft")
    references = [r["reference"] for r in st.records]
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    rows, numbers = [], {}
    for ax, (name, label) in zip(axes, (("sft", "SFT"), ("rl_ppo", "RL (PPO)"))):
        model, tokenizer = load_pretrained(st.out / name), Tokenizer.load(st.out / name / "tokenizer.json")
        fit_logits, fit_labels, _ = next_token_logits(model, tokenizer, [r["prompt"] for r in fit_records],
                                                      [r["completion"] for r in fit_records])
        temperature = fit_temperature(fit_logits, fit_labels)
        logits, labels, prompt_of = next_token_logits(model, tokenizer, st.prompts, references)
        before = top_confidences(logits, labels)
        after = top_confidences(logits, labels, temperature)
        ece_before, table_before = expected_calibration_error(*before)
        ece_after, table_after = expected_calibration_error(*after)
        d = _bootstrap_ece_difference(before, after, prompt_of)
        numbers[label] = {"temperature": temperature, "ece_before": ece_before, "ece_after": ece_after,
                          "ece_difference": d, "nll_before": temperature_nll(logits, labels, 1.0),
                          "nll_after": temperature_nll(logits, labels, temperature)}
        s.findings.append(difference_finding(f"temperature scaling (T = {temperature:.2f}, fitted on `sft.eval`)",
                                             f"{label}'s expected calibration error", *d, higher_is_better=False))
        rows.append(f"| {label} | {temperature:.3f} | {ece_before:.3f} | {ece_after:.3f} | {interval(*d)} | "
                    f"{numbers[label]['nll_before']:.3f} | {numbers[label]['nll_after']:.3f} |")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        for table, style, what in ((table_before, "o-", "before"), (table_after, "s-", f"after (T={temperature:.2f})")):
            filled = [r for r in table if r[2] > 0]
            ax.plot([r[3] for r in filled], [r[4] for r in filled], style, label=what)
        ax.set(xlabel="confidence", ylabel="accuracy", title=f"{label}: reliability of next-token predictions")
        ax.legend(fontsize=8)
    _save(fig, st.out / figure)
    s.body = "\n".join([
        "One temperature per model, fitted by minimising the NLL of the references of `sft.eval` (held out from "
        "training); ECE (10 equal-width bins) of the top next-token probability on the held-out prompts' references, "
        "the interval from a bootstrap over prompts.", "",
        "| model | T | ECE before | ECE after | after − before [95% CI] | NLL before | NLL after |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: |", *rows, "", f"![reliability diagrams]({figure})"])
    s.numbers = numbers
    return s


def attention(st: Study, figure, examples=64) -> Section:
    s = Section("Attention of the SFT and the RL model on the same input", "§8.3.1")
    if missing := st.missing("sft", "rl_ppo"):
        return not_run(s, missing)
    from shared.tokenizer import Tokenizer
    from torch_impl.checkpoint import load_pretrained
    from torch_impl.evaluate import attention_maps

    others = [n for n in ("sft_seed1",) if st.evaluated(n)]
    models = {n: load_pretrained(st.out / n) for n in ("sft", "rl_ppo", *others)}
    tokenizer = Tokenizer.load(st.out / "sft" / "tokenizer.json")
    pairs = list(zip(st.prompts, [r["reference"] for r in st.records]))[:examples]

    def distance(a, b):
        """Mean over heads and query positions of the total-variation distance of two attention rows."""
        return float(0.5 * np.abs(a - b).sum(-1).mean())
    maps = {n: [attention_maps(m, tokenizer, p, c)[0] for p, c in pairs] for n, m in models.items()}
    tv = {n: np.array([distance(a, b) for a, b in zip(maps["sft"], maps[n])]) for n in ("rl_ppo", *others)}
    rng = generator("bootstrap", 0)

    def mean_ci(x):
        means = x[rng.integers(0, len(x), (2000, len(x)))].mean(1)
        return float(x.mean()), *map(float, np.quantile(means, [0.025, 0.975]))
    def shown(m):
        return f"{m[0]:.3f} [{m[1]:.3f}, {m[2]:.3f}]"
    rl_tv = mean_ci(tv["rl_ppo"])
    line = (f"the RL model's last-layer attention differs from the SFT model's by a mean total-variation distance of "
            f"{shown(rl_tv)} per query (0: identical, 1: disjoint) over {len(pairs)} held-out inputs")
    if others:
        seed_tv = mean_ci(tv[others[0]])
        line += f"; two SFT models trained from different seeds differ by {shown(seed_tv)}"
    s.findings = [line]
    weights_sft, tokens = attention_maps(models["sft"], tokenizer, *pairs[0])
    weights_rl, _ = attention_maps(models["rl_ppo"], tokenizer, *pairs[0])
    heads = weights_sft.shape[0]
    plt = pyplot()
    fig, axes = plt.subplots(2, heads, figsize=(3.2 * heads, 6.6), squeeze=False)
    for row, (label, weights) in enumerate((("SFT", weights_sft), ("RL", weights_rl))):
        for h in range(heads):
            ax = axes[row][h]
            ax.imshow(weights[h], cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"{label}, head {h}", fontsize=9)
            ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=6)
            ax.set_yticks(range(len(tokens)), tokens, fontsize=6)
    fig.suptitle(f"last layer: {pairs[0][0]!r} -> {pairs[0][1]!r}", fontsize=9)
    _save(fig, st.out / figure)
    s.body = f"![attention, SFT above, RL below]({figure})"
    s.numbers = {"rl_total_variation": rl_tv, **({"sft_seed_total_variation": seed_tv} if others else {})}
    return s


def human_evaluation(st: Study) -> Section:
    s = Section("Human evaluation: the blind A/B sheet", "§3.3.3")
    folder = st.out / "human_eval"
    if not (folder / "pairs.jsonl").exists():
        return not_run(s, ["human_eval"])
    key = json.loads((folder / "unblinding-key.json").read_text())
    pairs = _count(folder / "pairs.jsonl")
    lines = [f"`{folder}/sheet.html` holds {pairs} blind pairs: SFT against `{Path(key['models'][1]).name}`, the RL "
             "model with the best held-out exact match (which is A is kept in `unblinding-key.json`). Rate them in "
             f"the terminal with `sftrl human-eval rate {folder} --rater NAME` (q stops; answers are saved as given), "
             f"then `sftrl human-eval score {folder}` and rerun the study command with `--resume` to put the scores "
             "here."]
    if (folder / "score.json").exists():
        from sftrl.reports.human_eval import format_score
        result = json.loads((folder / "score.json").read_text())
        lines += ["", format_score(result)]
        for model, m in result["models"].items():
            s.findings.append(f"{model} won {m['win']:.2f} [{m['win_ci95'][0]:.2f}, {m['win_ci95'][1]:.2f}] of "
                              f"{result['ratings']} human ratings")
        s.numbers = result
    else:
        lines += ["", "No ratings yet."]
        s.numbers = {"pairs": pairs, "models": key["models"]}
    s.body = "\n".join(lines)
    return s


def cost(st: Study) -> Section:
    """Wall time of every run (measured), tokens processed and FLOPs estimated by the rule of thumb
    2N per token and forward pass, 6N per trained token (N the model's parameters)."""
    s = Section("Cost: wall time, tokens and FLOPs per stage", "§9.3")
    seconds = _stage_seconds(st.out)
    if not seconds:
        return not_run(s, ["data"])
    rows, numbers = [], {}
    for name, wall in seconds.items():
        tokens, flops = _tokens_and_flops(st, name)
        numbers[name] = {"seconds": wall, "tokens": tokens, "flops": flops}
        rows.append(f"| `{name}` | {wall:.1f} | {'–' if tokens is None else f'{tokens:,}'} | "
                    f"{'–' if flops is None else f'{flops:.2e}'} |")
    if "sft" in numbers and "rl_ppo" in numbers and numbers["sft"]["flops"] and numbers["rl_ppo"]["flops"]:
        s.findings = [f"the PPO stage took {numbers['rl_ppo']['seconds'] / numbers['sft']['seconds']:.1f}× the SFT stage's wall "
                      f"time and {numbers['rl_ppo']['flops'] / numbers['sft']['flops']:.1f}× its FLOPs"]
    s.body = "\n".join([
        "Wall seconds measured on this machine (the whole command: start-up, training, its evaluations). Tokens: real "
        "tokens through the model in training (SFT, pretraining) or prompt + sampled tokens of every rollout (RL). FLOPs: "
        "6N per trained token plus 2N per token of each forward-only pass (RL: sampling, scoring, the reference), N = "
        "parameters -- an estimate, not a count (it overstates LoRA, whose frozen weights need no weight gradients).", "", "| run | wall s | tokens | FLOPs (est.) |", "| --- | ---: | ---: | ---: |",
        *rows, f"| total | {sum(seconds.values()):.1f} | | |"])
    s.numbers = numbers
    return s


# ----------------------------------------------------------------------------- helpers

def _count(path) -> int:
    return sum(1 for line in Path(path).read_text().splitlines() if line.strip())


def _stage_seconds(out) -> dict:
    path = Path(out) / "stage_seconds.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _reference_nll(st: Study, name):
    """Per held-out prompt: the model's mean loss per token of the reference completion."""
    from shared.tokenizer import Tokenizer
    from torch_impl.checkpoint import load_pretrained
    from torch_impl.evaluate import reference_nll

    nll, counts = reference_nll(load_pretrained(st.out / name), Tokenizer.load(st.out / name / "tokenizer.json"),
                                st.prompts, [r["reference"] for r in st.records])
    return nll / counts


def _bootstrap_ece_difference(before, after, prompt_of, samples=1000, seed=0):
    """ECE after - before, with a bootstrap over prompts (all tokens of a resampled prompt together)."""
    from shared.metrics import expected_calibration_error

    rng = generator("bootstrap", seed)
    prompts = np.unique(prompt_of)
    tokens_of = {p: np.nonzero(prompt_of == p)[0] for p in prompts}
    diffs = []
    for _ in range(samples):
        idx = np.concatenate([tokens_of[p] for p in rng.choice(prompts, len(prompts))])
        diffs.append(expected_calibration_error(after[0][idx], after[1][idx])[0] -
                     expected_calibration_error(before[0][idx], before[1][idx])[0])
    mean = expected_calibration_error(*after)[0] - expected_calibration_error(*before)[0]
    low, high = np.quantile(diffs, [0.025, 0.975])
    return float(mean), float(low), float(high)


def _parameters(folder) -> int | None:
    from safetensors import safe_open

    path = Path(folder) / "model.safetensors"
    if not path.exists():
        return None
    with safe_open(str(path), "np") as f:
        return int(sum(np.prod(f.get_slice(k).get_shape()) for k in f.keys()))


def _tokens_and_flops(st: Study, name):
    state = st.state(name)
    n = _parameters(st.out / name)
    if n is None:
        return None, None
    if "tokens" in state:  # pretraining and SFT: every token trained
        return state["tokens"], 6.0 * n * state["tokens"]
    metrics = [r for r in st.metrics(name) if "objective/response_length" in r]
    config = state.get("config") or {}
    if metrics and config:
        from shared.tokenizer import Tokenizer
        from shared.data import load_jsonl
        tokenizer = Tokenizer.load(st.out / name / "tokenizer.json")
        prompts = load_jsonl(st.out / "data" / "prompt.train.jsonl", "prompt")[:256]
        prompt_tokens = np.mean([len(tokenizer.encode(r["prompt"], add_special_tokens=False)) + 2 for r in prompts])
        per_row = [prompt_tokens + r["objective/response_length"] for r in metrics]
        tokens = int(round(config["batch_size"] * sum(per_row)))
        passes = PPOConfig.from_dict(config).steps_per_rollout[0]
        return tokens, tokens * n * (2.0 * 3 + 6.0 * passes)  # sampling, policy and reference scoring; updates
    return None, None


# ----------------------------------------------------------------------------- the report

FIGURES = {"family": "study_family.png", "overopt": "study_overoptimisation.png",
           "calibration": "study_calibration.png", "attention": "study_attention.png"}


def sections(st: Study, seeds=(0, 1, 2), betas=(0.005, 0.05, 0.3)) -> list[Section]:
    return [main_comparison(st, seeds), rl_family(st, FIGURES["family"]), pretraining(st), architectures(st), lora(st),
            multi_task(st),
            reward_design(st), over_optimisation(st, betas, FIGURES["overopt"]), same_budget(st),
            calibration(st, FIGURES["calibration"]), attention(st, FIGURES["attention"]), human_evaluation(st), cost(st)]


def write_study_report(out, commands, size, seeds, betas, incomplete=None) -> dict:
    """report.md, report.html; returns the numbers (summary.json's content). `seeds`: those of the
    main comparison; `betas`: the KL coefficients of the over-optimisation sweep, low to high."""
    out = Path(out)
    st = Study(out)
    done = sections(st, seeds, betas)
    lines = [f"# sftrl study{' (tiny size: checks the machinery, not the quality)' if size == 'tiny' else ''}", "",
             "The questions of the seed document *SFT and RL model evaluation*, each answered by runs of this folder. "
             f"Held-out: the {len(st.prompts)} prompts of `data/prompt.eval.jsonl`, greedy decoding, scored by the task's "
             "verifier; differences are paired-bootstrap 95 % intervals. Every finding line is computed from the "
             "numbers below it.", ""]
    if incomplete:
        lines += [f"**Incomplete:** the study stopped in run `{incomplete}`; sections that need later runs say so.", ""]
    lines += ["## Findings", ""] + [f"- {f}" for sec in done for f in sec.findings] + [""]
    for sec in done:
        lines += [f"## {sec.title}", "", f"*Seed: {sec.seed}.*", ""]
        lines += [f"- **Finding:** {f}." for f in sec.findings] + ([""] if sec.findings else [])
        lines += [sec.body, ""]
    lines += ["## Commands", "", "```", *commands, "```", "", "## Versions", "",
              ", ".join(f"{k} {v}" for k, v in versions().items()), ""]
    report = "\n".join(lines)
    atomic_write_text(out / "report.md", report)
    write_html(out, report, "sftrl study")
    return {"preset": "study", "size": size, "incomplete": incomplete,
            "findings": [f for sec in done for f in sec.findings],
            "sections": {sec.title: sec.numbers for sec in done}, "versions": versions()}
