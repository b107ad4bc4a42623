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
from shared.findings import Finding, comparison_finding, difference_finding, interval, render_family
from shared.io import atomic_write_text
from shared.random_streams import generator
from shared.tasks import TASKS
from sftrl.reports.common import pyplot, read_jsonl, versions
from sftrl.reports.html import write_html

ALPHA = 0.05  # the level of every interval (95 %) and test of the report


@dataclass
class Section:
    title: str
    seed: str                       # the seed document's chapters it answers
    findings: list = field(default_factory=list)   # Finding
    body: str = ""
    numbers: dict = field(default_factory=dict)


def _fmt(value, digits=3):
    return "–" if value is None else f"{value:.{digits}f}"


def kl_of(row) -> float | None:
    """The Monte-Carlo sequence KL to the first (SFT) model of one eval.json row, nats per completion."""
    kl = row.get("sequence_kl_to_first")
    return None if kl is None else kl["mean"]


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

    def completions(self, name) -> list[str]:
        return next(c for m, c in self.evaluation["completions"].items() if Path(m).name == name)

    def scores(self, name, metric):
        """Per-prompt scores of one model on the held-out prompts (np.array)."""
        from shared.tasks import task_scores

        if name not in self._scores:
            exact, partial = task_scores(self.prompts, self.completions(name))
            self._scores[name] = {"exact_match": np.array(exact, float), "partial_credit": np.array(partial, float)}
        return self._scores[name][metric]

    def compare(self, first, second, metric="exact_match", task=None):
        """second - first on the held-out prompts (of one task if given): the paired bootstrap's
        interval and the paired test's p (shared.inference.paired_test). One seed: prompts only."""
        from shared.inference import paired_test

        keep = np.array([task is None or r.get("task") == task for r in self.records])
        return paired_test(self.scores(first, metric)[keep], self.scores(second, metric)[keep])

    def compare_seeds(self, firsts, seconds, metric="exact_match"):
        """second - first over seeds and prompts: seed k's `seconds[k]` paired with `firsts[k]` on the
        same prompts; the interval counts seed and prompt variance (shared.inference.seed_prompt_test)."""
        from shared.inference import seed_prompt_test

        return seed_prompt_test(np.stack([self.scores(n, metric) for n in firsts]),
                                np.stack([self.scores(n, metric) for n in seconds]))

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

def _seed_names(base: str, seeds) -> list[str]:
    """`sft`, `sft_seed1`, ...: the run of each seed."""
    from sftrl.pipeline.study_design import seed_suffix

    return [f"{base}{seed_suffix(k)}" for k in seeds]


def main_comparison(st: Study, seeds) -> Section:
    s = Section(f"SFT against RL, {len(seeds)} seeds", "§1.2.3, §9.1")
    sft, rl = _seed_names("sft", seeds), _seed_names("rl_ppo", seeds)
    if missing := st.missing(*sft, *rl):
        return not_run(s, missing)
    rows, per_seed = [], []
    for seed, a, b in zip(seeds, sft, rl):
        e, p = st.compare(a, b), st.compare(a, b, "partial_credit")
        per_seed.append({"seed": seed, "sft": st.row(a)["exact_match"], "rl": st.row(b)["exact_match"],
                         "difference": tuple(e), "partial_difference": tuple(p)})
        rows.append(f"| {seed} | {st.row(a)['exact_match']:.3f} | {st.row(b)['exact_match']:.3f} | {interval(*e)} | "
                    f"{st.row(a)['partial_credit']:.3f} | {st.row(b)['partial_credit']:.3f} | {interval(*p)} |")
    exact, partial = st.compare_seeds(sft, rl), st.compare_seeds(sft, rl, "partial_credit")
    s.findings = [Finding(comparison_finding("SFT", "RL (PPO)", f"held-out exact match over {len(seeds)} seeds",
                                             *exact), exact.p),
                  Finding(comparison_finding("SFT", "RL (PPO)", f"held-out partial credit over {len(seeds)} seeds",
                                             *partial), partial.p)]
    s.body = "\n".join([
        "Each seed trains its own SFT model (from the same pretrained model) and its own PPO run from it. A row's "
        "interval is over the held-out prompts of that seed only; the pooled row's counts the variance between "
        f"seeds as well ({exact.method}).", "",
        "| seed | SFT exact | RL exact | RL − SFT exact [95% CI] | SFT partial | RL partial | RL − SFT partial [95% CI] |",
        "| ---: | ---: | ---: | --- | ---: | ---: | --- |", *rows,
        f"| all | {np.mean([r['sft'] for r in per_seed]):.3f} | {np.mean([r['rl'] for r in per_seed]):.3f} | "
        f"{interval(*exact)} | | | {interval(*partial)} |"])
    s.numbers = {"seeds": per_seed, "exact_match_difference": exact,
                 "partial_credit_difference": partial}
    return s


def rl_family(st: Study, seeds, figure) -> Section:
    from sftrl.pipeline.study_design import FAMILY as DECLARED, family_runs

    s = Section("The RL family against SFT: PPO, GRPO, RLOO, REINFORCE, DPO", "§3.2, §9.1")
    sft = _seed_names("sft", seeds)
    family = family_runs(seeds)
    present = {label: names for label, names in family.items() if st.evaluated(*names)}
    if not st.evaluated(*sft) or not present:
        return not_run(s, st.missing(*sft, *[n for names in family.values() for n in names]))
    seconds = _stage_seconds(st.out)
    rows, numbers = [], {}
    for label, names in present.items():
        e, p = st.compare_seeds(sft, names), st.compare_seeds(sft, names, "partial_credit")
        exact = [st.row(n)["exact_match"] for n in names]
        kls = [kl_of(st.row(n)) for n in names]
        wall = [seconds[n] for n in names if n in seconds]
        numbers[label] = {"runs": names, "exact_match": exact, "exact_match_difference": e,
                          "partial_credit_difference": p, "kl": kls,
                          "seconds": float(np.mean(wall)) if wall else None}
        s.findings.append(Finding(comparison_finding("SFT", label, f"held-out exact match over {len(seeds)} seeds",
                                                     *e), e.p))
        rows.append(f"| {label} | {' / '.join(f'{x:.3f}' for x in exact)} | {interval(*e)} | {interval(*p)} | "
                    f"{' / '.join(_fmt(k, 2) for k in kls)} | {_fmt(numbers[label]['seconds'], 0)} |")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    labels = list(numbers)
    means = [numbers[label]["exact_match_difference"].diff for label in labels]
    errors = np.array([[m - numbers[label]["exact_match_difference"].low,
                        numbers[label]["exact_match_difference"].high - m] for m, label in zip(means, labels)]).T
    ax.bar(labels, means, yerr=errors, capsize=4, color="tab:blue")
    ax.axhline(0, color="k", lw=0.8)
    ax.set(ylabel="exact match, method − SFT", title=f"Held-out gain over SFT, {len(seeds)} seeds (95% CI)")
    _save(fig, st.out / figure)
    declared = [f"| {a.upper()} | `{' '.join(flags) or '(the defaults)'}` | {source} |"
                for a, (flags, source) in DECLARED.items()]
    s.body = "\n".join([
        f"Each method runs once per seed ({', '.join(map(str, seeds))}) from that seed's SFT model, on the same prompts "
        "with the task's verifier (partial credit); DPO on pairs of its own samples ranked by the verifier. Intervals "
        "count seed and prompt variance. The settings were declared in `sftrl/pipeline/study.py` before any run and are "
        "the same for every seed; none was tuned on these results:", "",
        "| method | flags beside the shared ones | source |", "| --- | --- | --- |", *declared,
        "| DPO | `" + " ".join(_run_flags(st, family["DPO"][0])) + "` | Rafailov et al. 2023: β = 0.1 |", "",
        "| method | exact match per seed | − SFT exact [95% CI] | − SFT partial [95% CI] | KL to SFT per seed | "
        "mean wall s |", "| --- | --- | --- | --- | --- | ---: |", *rows, "", f"![gain over SFT per method]({figure})"])
    s.numbers = numbers
    return s


def _run_flags(st: Study, name) -> list[str]:
    """The flags a run was given beyond its inputs and outputs, from the study's command list."""
    config = st.state(name).get("config") or {}
    return [f"--{k.replace('_', '-')} {v}" for k, v in config.items() if k in ("steps", "lr", "beta")]


def pretraining(st: Study) -> Section:
    s = Section("Pretraining: clean text, contaminated text, or none", "§2.1.3, §3.1.2")
    needed = ("sft", "sft_scratch", "sft_contaminated", "rl_reward_partial", "rl_scratch")
    if missing := st.missing(*needed):
        return not_run(s, missing)
    from shared.inference import paired_test
    starts = {"sft": "clean text", "sft_contaminated": "contaminated text", "sft_scratch": "random weights"}
    loss = {n: st.state(n).get("best_eval_loss") for n in starts}
    nll = {n: _reference_nll(st, n) for n in starts}
    d_loss = paired_test(nll["sft_scratch"], nll["sft"])
    e_clean, e_dirty = st.compare("sft_scratch", "sft"), st.compare("sft_scratch", "sft_contaminated")
    e_seen = st.compare("sft", "sft_contaminated")
    e_rl = st.compare("rl_scratch", "rl_reward_partial")
    gain_pre, gain_scratch = st.compare("sft", "rl_reward_partial"), st.compare("sft_scratch", "rl_scratch")
    s.findings = [
        Finding(difference_finding("pretraining on clean text", "SFT's held-out loss per token", *d_loss,
                                   higher_is_better=False), d_loss.p),
        Finding(difference_finding("pretraining on clean text", "SFT's held-out exact match", *e_clean), e_clean.p),
        Finding(difference_finding("pretraining on contaminated text (solved task instances)",
                                   "SFT's held-out exact match", *e_dirty), e_dirty.p),
        Finding(difference_finding("contaminated rather than clean pretraining text", "SFT's held-out exact match",
                                   *e_seen), e_seen.p),
        Finding(difference_finding("clean pretraining (before SFT and RL)", "RL's held-out exact match", *e_rl), e_rl.p)]
    texts = {n: _count(st.out / "data" / f"{n}.train.jsonl") for n in ("text", "text_contaminated")}
    pre, dirty = st.state("pretrain"), st.state("pretrain_contaminated")
    s.body = "\n".join([
        f"`pretrain/`: causal LM on {texts['text']:,} lines of clean text (letters, numbers, task prompts without "
        "answers and the task words in other sentences; no line holds a task input with its answer -- "
        "`shared/corpus.py`, checked by an independent solver in the tests), "
        f"{pre.get('step', '?')} steps, held-out loss {_fmt(pre.get('best_eval_loss'))} per token. "
        f"`pretrain_contaminated/`: the same steps on {texts['text_contaminated']:,} \"prompt = answer\" lines "
        f"(solved task instances; held-out loss {_fmt(dirty.get('best_eval_loss'))}). `sft_scratch/` has the same tokenizer "
        "and architecture and starts from random weights. SFT is the same run from each start; the RL rows are the "
        "same short PPO run from the clean and the random start. One seed: intervals over prompts.", "",
        "| | clean text | contaminated text | random weights | clean − random [95% CI] | contaminated − clean [95% CI] |",
        "| --- | ---: | ---: | ---: | --- | --- |",
        f"| SFT held-out loss per token (best evaluation on `sft.eval`) | {_fmt(loss['sft'])} | "
        f"{_fmt(loss['sft_contaminated'])} | {_fmt(loss['sft_scratch'])} | – | – |",
        f"| SFT loss per token on the held-out prompts' references | {nll['sft'].mean():.3f} | "
        f"{nll['sft_contaminated'].mean():.3f} | {nll['sft_scratch'].mean():.3f} | {interval(*d_loss)} | – |",
        *[f"| SFT {m.replace('_', ' ')} | {st.row('sft')[m]:.3f} | {st.row('sft_contaminated')[m]:.3f} | "
          f"{st.row('sft_scratch')[m]:.3f} | {interval(*st.compare('sft_scratch', 'sft', m))} | "
          f"{interval(*st.compare('sft', 'sft_contaminated', m))} |" for m in ("exact_match", "partial_credit")],
        f"| RL exact match | {st.row('rl_reward_partial')['exact_match']:.3f} | – | "
        f"{st.row('rl_scratch')['exact_match']:.3f} | {interval(*e_rl)} | – |",
        f"| RL − its SFT, exact match | {interval(*gain_pre)} | – | {interval(*gain_scratch)} | – | – |"])
    s.numbers = {"sft_best_eval_loss": loss, "reference_loss_difference": d_loss,
                 "sft_exact_match_difference": e_clean, "contaminated_exact_match_difference": e_dirty,
                 "contaminated_minus_clean": e_seen, "rl_exact_match_difference": e_rl,
                 "rl_gain": {"pretrained": gain_pre, "scratch": gain_scratch}}
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
    s.findings = [Finding(comparison_finding("the BERT-style model", short[a], "SFT's held-out exact match",
                                             *sft_vs[a]), sft_vs[a].p) for a in ("gpt2", "llama")]
    s.findings += [Finding(comparison_finding("the BERT-style model", short[a], "RL's held-out exact match",
                                              *rl_vs[a]), rl_vs[a].p) for a in ("gpt2", "llama")]
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


def lora(st: Study, ranks) -> Section:
    s = Section("LoRA against full fine-tuning", "§2.2.3")
    names = {rank: f"sft_lora_r{rank}" for rank in ranks}
    if len(ranks) > 1:  # the middle rank again, with the embeddings trained (--lora-embeddings)
        names[f"{ranks[1]}+embeddings"] = f"sft_lora_r{ranks[1]}_embeddings"
    if missing := st.missing("sft", *names.values()):
        return not_run(s, missing)
    full = st.state("sft")

    def step_ms(n):
        state = st.state(n)
        return 1000 * state["train_seconds"] / state["step"]
    rows, numbers = [], {}
    for rank, name in names.items():
        state = st.state(name)
        e, p = st.compare("sft", name), st.compare("sft", name, "partial_credit")
        share = state["trainable_parameters"] / state["total_parameters"]
        numbers[rank] = {"exact_match_difference": e, "partial_credit_difference": p,
                         "trainable_parameters": state["trainable_parameters"], "trainable_share": share,
                         "step_ms": step_ms(name), "best_eval_loss": state.get("best_eval_loss"),
                         "lr": state["config"]["lr"], "alpha": state["config"]["lora_alpha"]}
        label = f"LoRA rank {rank}".replace("+embeddings", " with the embeddings trained")
        s.findings.append(Finding(comparison_finding("full fine-tuning", label, "held-out exact match", *e), e.p))
        rows.append(f"| {label} | {state['trainable_parameters']:,} ({share:.1%}) | {step_ms(name):.1f} | "
                    f"{_fmt(state.get('best_eval_loss'))} | {st.row(name)['exact_match']:.3f} | {interval(*e)} | "
                    f"{st.row(name)['partial_credit']:.3f} | {interval(*p)} |")
    first = st.state(names[ranks[0]])["config"]
    s.body = "\n".join([
        f"Every run from the pretrained model with the same data, steps ({full['step']}) and batch. Full fine-tuning at "
        f"lr {full['config']['lr']:g}; LoRA with the defaults of `sftrl sft --lora-rank` (adapters on every linear layer "
        f"of each block, lr {first['lr']:g}, alpha {first['lora_alpha']:g}), the embeddings and the (tied) LM head "
        "frozen -- and once more at the middle rank with `--lora-embeddings`, the embeddings trained in full. Step "
        "time: the run's training seconds (its evaluations included) per step. One seed: intervals over prompts.", "",
        "| | trainable parameters | ms per step | held-out loss | exact match | − full [95% CI] | partial credit | "
        "− full [95% CI] |", "| --- | ---: | ---: | ---: | ---: | --- | ---: | --- |",
        f"| full fine-tuning | {full['trainable_parameters']:,} (100%) | {step_ms('sft'):.1f} | "
        f"{_fmt(full.get('best_eval_loss'))} | {st.row('sft')['exact_match']:.3f} | – | {st.row('sft')['partial_credit']:.3f} | – |",
        *rows])
    s.numbers = {"ranks": numbers, "full": {"trainable_parameters": full["trainable_parameters"],
                                            "step_ms": step_ms("sft"), "best_eval_loss": full.get("best_eval_loss")}}
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
        s.findings.append(Finding(comparison_finding("the multi-task model", f"the {task}-only model",
                                                     f"{task} exact match", *e), e.p))
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
        numbers[name] = {"exact_match_difference": e, "partial_credit_difference": p,
                         "kl": kl_of(st.row(name))}
        rows.append(f"| {label} | {st.row(name)['exact_match']:.3f} | {interval(*e)} | {st.row(name)['partial_credit']:.3f} | "
                    f"{interval(*p)} | {_fmt(kl_of(st.row(name)), 2)} |")
    shaped = st.compare("rl_reward_exact", "rl_reward_partial")
    verifier = st.compare("rl_reward_model", "rl_reward_partial")
    s.findings = [Finding(comparison_finding("the sparse reward", "the shaped reward", "held-out exact match", *shaped),
                          shaped.p),
                  Finding(comparison_finding("the reward model", "the verifier", "held-out exact match", *verifier),
                          verifier.p)]
    accuracy = st.state("reward_model").get("eval/pairwise_accuracy")
    s.body = "\n".join([
        f"The same PPO run (flags below) from `sft/`, three rewards. The reward model's held-out pairwise accuracy: {_fmt(accuracy)}. "
        "Scores are the verifier's (gold) on held-out prompts.", "",
        "| reward | exact match | − SFT [95% CI] | partial credit | − SFT [95% CI] | KL to SFT (MC, nats) |",
        "| --- | ---: | --- | ---: | --- | ---: |", *rows, "",
        f"shaped − sparse, exact match: {interval(*shaped)}; verifier − reward model, exact match: {interval(*verifier)}."])
    numbers.update(shaped_minus_sparse=shaped, verifier_minus_reward_model=verifier)
    s.numbers = numbers
    return s


def over_optimisation(st: Study, betas, figure) -> Section:
    """The reward model as a proxy: its score against the verifier's (gold) along training, and the
    end of each run of a sweep of the KL coefficient."""
    from shared.inference import fit_gao, overoptimisation_test

    s = Section("Reward over-optimisation and the reward-KL frontier", "§3.2.2")
    sweep = (("rl_rm_beta_low", betas[0]), ("rl_reward_model", betas[1]), ("rl_rm_beta_high", betas[2]))
    names = [n for n, _ in sweep]
    if missing := st.missing("sft", *names):
        return not_run(s, missing)
    curve = st.metrics("rl_rm_beta_low")
    kl = np.array([r["objective/kl"] for r in curve])
    proxy = np.array([r["objective/scores"] for r in curve])
    gold = np.array([r["objective/gold_partial"] for r in curve])
    w = max(1, len(curve) // 8)                       # a moving average over an eighth of the run (the figure)
    smooth = lambda x: np.convolve(x, np.ones(w) / w, mode="valid")  # noqa: E731
    kl_s, proxy_s, gold_s = smooth(kl), smooth(proxy), smooth(gold)
    peak = int(np.argmax(gold_s))
    test = overoptimisation_test(gold, proxy, kl=kl, alpha=ALPHA)
    gao = test.get("gao") or (fit_gao(kl, gold) if len(gold) >= 4 else None)  # (its 3 parameters need 4 points)
    verdict = test["verdict"]
    s.findings = [Finding(
        f"against the reward model with β = {betas[0]:g}, as KL to SFT went from {kl_s[0]:.2f} to {kl_s[-1]:.2f} the proxy "
        f"(reward-model) score went from {proxy_s[0]:.3f} to {proxy_s[-1]:.3f} and the gold (verifier) score from "
        f"{gold_s[0]:.3f} to {gold_s[-1]:.3f}; {verdict}", test["p"])]
    if gao is not None:
        where = ("no interior gold peak" if gao["kl_peak"] is None else f"its gold peak at KL {gao['kl_peak']:.2f}"
                 + ("" if gao["peak_inside"] else " (beyond the KL this run reached)"))
        s.findings.append(Finding(
            f"Gao et al.'s form gold − gold(0) = d(α − β log d), d = √KL, fits the β = {betas[0]:g} run with α = "
            f"{gao['alpha']:.3f}, β = {gao['beta']:.3f} (R² {gao['r2']:.2f}): {where}"))
    rows, frontier = [], []
    for name, beta in sweep:
        p = st.compare("sft", name, "partial_credit")
        last = st.metrics(name)[-w:]
        proxy_end = float(np.mean([r["objective/scores"] for r in last]))
        frontier.append((kl_of(st.row(name)), st.row(name)["partial_credit"], proxy_end, beta))
        rows.append(f"| {beta:g} | `{name}/` | {_fmt(kl_of(st.row(name)), 2)} | {proxy_end:.3f} | "
                    f"{st.row(name)['partial_credit']:.3f} | {interval(*p)} |")
        s.findings.append(Finding(difference_finding(f"training against the reward model at β = {beta:g}",
                                                     "held-out gold partial credit", *p), p.p))
    _overoptimisation_figure(st.out / figure, betas[0], w, kl_s, proxy_s, gold_s, peak, np.array(sorted(frontier)))
    s.body = "\n".join([
        "PPO against the learned reward model, with the verifier's score of the same samples logged beside it "
        "(`objective/gold_partial` in each run's metrics.jsonl). The verdict is a test with a known error rate "
        f"(shared.inference.overoptimisation_test: {test['method']}); simulated in tests/test_inference.py, it fires "
        "at most 5 % of the time when the gold curve is flat and at least 80 % of the time under a rise and fall. "
        "Gao et al.'s curve is fitted to the whole run's gold score against its KL.", "",
        "| β (KL coefficient) | run | held-out KL to SFT (MC, nats) | proxy score, last samples | held-out gold partial | "
        "gold − SFT [95% CI] |", "| ---: | --- | ---: | ---: | ---: | --- |", *rows, "", f"![over-optimisation]({figure})"])
    s.numbers = {"curve": {"kl": kl_s.tolist(), "proxy": proxy_s.tolist(), "gold": gold_s.tolist()},
                 "gold_peak": {"score": float(gold_s[peak]), "kl": float(kl_s[peak])}, "fell": bool(test["fired"]),
                 "test": test, "gao": gao,
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
    axes[1].set(xlabel="KL to SFT (held-out, Monte-Carlo, nats)", ylabel="score", title="Reward-KL frontier over β")
    axes[1].legend(fontsize=8)
    _save(fig, path)


def same_budget(st: Study, flops=None) -> Section:
    """`flops`: each run's FLOPs (default: the cost section's counter on its folder)."""
    s = Section("When to pick SFT or RL: the same FLOPs, the same labels", "§1.2.3, §9.1")
    names = ("sft", "sft_compute", "rl_ppo", "sft_labels")
    if missing := st.missing(*names):
        return not_run(s, missing)
    flops = flops or {n: run_flops(st.out, n) for n in names}
    sft_data = _count(st.out / "data" / "sft.train.jsonl")
    labelled = {"sft": sft_data, "sft_compute": sft_data, "rl_ppo": sft_data,
                "sft_labels": _count(st.out / "data" / "sft.rl_prompts.jsonl")}
    spent = {"sft": flops["sft"], "sft_compute": flops["sft_compute"], "rl_ppo": flops["sft"] + flops["rl_ppo"],
             "sft_labels": flops["sft_labels"]}
    describe = {"sft": f"SFT, {st.state('sft')['step']} steps",
                "sft_compute": f"SFT, {st.state('sft_compute')['step']} steps (the RL model's FLOPs)",
                "rl_ppo": "SFT then RL (PPO) on unlabelled prompts with a verifier",
                "sft_labels": f"SFT on the RL prompts' references (every prompt labelled), {st.state('sft_labels')['step']} "
                              "steps (the RL model's FLOPs)"}
    rows = []
    for name in names:
        d = st.compare("rl_ppo", name) if name != "rl_ppo" else None
        rows.append(f"| {describe[name]} | {labelled[name]:,} | {spent[name]:.2e} | {st.row(name)['exact_match']:.3f} | "
                    f"{'–' if d is None else interval(*d)} |")
    compute = st.compare("sft_compute", "rl_ppo")
    labels = st.compare("rl_ppo", "sft_labels")
    s.findings = [Finding(comparison_finding("SFT given the RL model's FLOPs", "RL", "held-out exact match", *compute),
                          compute.p),
                  Finding(comparison_finding("RL", f"SFT with {labelled['sft_labels']:,} labels", "held-out exact match",
                                             *labels), labels.p)]
    s.body = "\n".join([
        "RL needs prompts and a verifier, not labels. Given the same compute, is more SFT on the same labels as good? "
        "`sft_compute` trains as many steps as make its FLOPs equal the RL model's: its SFT run plus its PPO run, both "
        "counted by the cost section's counter (pretraining, which both start from, is left out of both). And SFT "
        "with every RL prompt labelled, given the same steps as `sft_compute` (ten times the data needs more than "
        "SFT's steps), against RL. One seed: intervals over prompts.", "",
        "| model | labelled examples | FLOPs (est.) | exact match | − RL [95% CI] |", "| --- | ---: | ---: | ---: | --- |",
        *rows])
    s.numbers = {"rl_minus_sft_same_flops": compute, "sft_labels_minus_rl": labels, "flops": spent}
    return s


def _split_calibration(st: Study):
    """The held-out prompts in two halves, alternately: temperature is fitted on the first
    (calibration) half and judged on the second, both drawn from the evaluated distribution."""
    index = np.arange(len(st.prompts))
    return index[index % 2 == 0], index[index % 2 == 1]


def calibration(st: Study, figure) -> Section:
    s = Section("Calibration before and after temperature scaling", "§8.3.2")
    if missing := st.missing("sft", "rl_ppo"):
        return not_run(s, missing)
    from shared.metrics import expected_calibration_error, fit_temperature, temperature_nll, top_confidences
    from shared.tokenizer import Tokenizer
    from torch_impl.checkpoint import load_pretrained
    from torch_impl.evaluate import next_token_logits

    references = [r["reference"] for r in st.records]
    fit_half, test_half = _split_calibration(st)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    rows, numbers = [], {}
    for ax, (name, label) in zip(axes, (("sft", "SFT"), ("rl_ppo", "RL (PPO)"))):
        model, tokenizer = load_pretrained(st.out / name), Tokenizer.load(st.out / name / "tokenizer.json")
        fit_logits, fit_labels, _ = next_token_logits(model, tokenizer, [st.prompts[i] for i in fit_half],
                                                      [references[i] for i in fit_half])
        temperature = fit_temperature(fit_logits, fit_labels)
        logits, labels, prompt_of = next_token_logits(model, tokenizer, [st.prompts[i] for i in test_half],
                                                      [references[i] for i in test_half])
        before = top_confidences(logits, labels)
        after = top_confidences(logits, labels, temperature)
        ece_before, table_before = expected_calibration_error(*before)
        ece_after, table_after = expected_calibration_error(*after)
        d = _bootstrap_ece_difference(before, after, prompt_of)
        numbers[label] = {"temperature": temperature, "ece_before": ece_before, "ece_after": ece_after,
                          "ece_difference": d[:3], "nll_before": temperature_nll(logits, labels, 1.0),
                          "nll_after": temperature_nll(logits, labels, temperature)}
        s.findings.append(Finding(difference_finding(
            f"temperature scaling (T = {temperature:.2f}, fitted on the calibration half)",
            f"{label}'s expected calibration error on the other half", *d[:3], higher_is_better=False), d[3]))
        rows.append(f"| {label} | {temperature:.3f} | {ece_before:.3f} | {ece_after:.3f} | {interval(*d[:3])} | "
                    f"{numbers[label]['nll_before']:.3f} | {numbers[label]['nll_after']:.3f} |")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        for table, style, what in ((table_before, "o-", "before"), (table_after, "s-", f"after (T={temperature:.2f})")):
            filled = [r for r in table if r[2] > 0]
            ax.plot([r[3] for r in filled], [r[4] for r in filled], style, label=what)
        ax.set(xlabel="confidence", ylabel="accuracy", title=f"{label}: reliability of next-token predictions")
        ax.legend(fontsize=8)
    _save(fig, st.out / figure)
    s.body = "\n".join([
        f"The held-out prompts split alternately into a calibration half ({len(fit_half)}) and a test half "
        f"({len(test_half)}), both from the evaluated distribution. One temperature per model, fitted by minimising the "
        "NLL of the calibration half's references; ECE (10 equal-width bins) of the top next-token probability on the "
        "test half's references, before and after; the interval and p from a bootstrap over the test half's prompts.", "",
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
    s.findings = [Finding(line)]
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
             "model (seed 0) with the best exact match on the held-out prompts that are not on the sheet -- chosen on the "
             "sheet's own prompts, it would be the model that was lucky on them (which is A is kept in "
             "`unblinding-key.json`). Intervals count pairs: each pair's ratings are averaged first. Rate them in "
             f"the terminal with `sftrl human-eval rate {folder} --rater NAME` (q stops; answers are saved as given), "
             f"then `sftrl human-eval score {folder}` and rerun the study command with `--resume` to put the scores "
             "here."]
    if (folder / "score.json").exists():
        from sftrl.reports.human_eval import format_score
        result = json.loads((folder / "score.json").read_text())
        lines += ["", format_score(result)]
        for model, m in result["models"].items():
            s.findings.append(Finding(f"{model} won {m['win']:.2f} [{m['win_ci95'][0]:.2f}, {m['win_ci95'][1]:.2f}] "
                                      f"of {result.get('pairs', result['ratings'])} rated pairs"))
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
        s.findings = [Finding(f"the PPO stage took {numbers['rl_ppo']['seconds'] / numbers['sft']['seconds']:.1f}× the SFT stage's wall "
                      f"time and {numbers['rl_ppo']['flops'] / numbers['sft']['flops']:.1f}× its FLOPs")]
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
    """ECE after - before, with a bootstrap over prompts (all tokens of a resampled prompt together):
    (difference, low, high, p)."""
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
    diffs = np.asarray(diffs)
    p = min(1.0, 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0)))  # the percentile bootstrap's two-sided p
    return float(mean), float(low), float(high), float(p)


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


def run_flops(out, name) -> float:
    """The estimated FLOPs of one finished run (the cost section's counter); 0 when it cannot tell."""
    return _tokens_and_flops(Study(out), name)[1] or 0.0


def add_digits(st: Study) -> Section:
    """Why `add` stays at the floor (or not): accuracy per digit position of the sum."""
    s = Section("The add task: per-digit accuracy", "§3.1.4")
    names = [n for n in ("sft", "rl_ppo", "sft_labels") if st.evaluated(n)]
    if not names or "add" not in {r.get("task") for r in st.records}:
        return not_run(s, st.missing("sft", "rl_ppo", "sft_labels"))
    from shared.tasks import normalize_answer, solve

    chosen = [i for i, r in enumerate(st.records) if r.get("task") == "add"]
    places = ("units", "tens", "hundreds", "thousands")
    rows, numbers = [], {}
    for name in names:
        completions = st.completions(name)
        right = {place: [] for place in places}
        for i in chosen:
            want, got = solve(st.prompts[i])[::-1], normalize_answer(completions[i])[::-1]
            for k, place in enumerate(places[:len(want)]):
                right[place].append(float(k < len(got) and got[k] == want[k]))
        acc = {place: (float(np.mean(v)) if v else None) for place, v in right.items()}
        numbers[name] = {"exact_match": st.row(name)["add/exact_match"], **acc}
        rows.append(f"| `{name}` | {st.row(name)['add/exact_match']:.3f} | " + " | ".join(_fmt(acc[p]) for p in places) + " |")
    best = max(names, key=lambda n: numbers[n]["exact_match"])
    s.findings = [Finding(
        f"on add, the best of {', '.join(names)} (`{best}`) answered {numbers[best]['exact_match']:.3f} of the sums "
        f"exactly; its digits were right {numbers[best]['units']:.2f} (units), {numbers[best]['tens']:.2f} (tens), "
        f"{numbers[best]['hundreds']:.2f} (hundreds) of the time -- chance for a digit is 0.10")]
    s.body = "\n".join([
        f"The {len(chosen)} held-out sums (two numbers of up to three digits), each digit of the model's answer against "
        "the sum's, aligned from the right. A model that places digits but cannot carry gets the units right far more "
        "often than the rest, and an exact match needs every place right.", "",
        "| model | exact match | " + " | ".join(places) + " |", "| --- | ---: | " + " | ".join("---:" for _ in places) + " |",
        *rows])
    s.numbers = numbers
    return s


def samples(st: Study, count=6) -> Section:
    """A few held-out prompts with every main model's greedy completion, next to the answer."""
    s = Section("Samples: the same held-out prompts, every main model", "§3.3")
    names = [n for n in ("sft", "rl_ppo", "rl_grpo", "rl_rloo", "rl_reinforce", "dpo", "sft_scratch", "sft_contaminated")
             if st.evaluated(n)]
    if not names:
        return not_run(s, st.missing("sft"))
    from shared.tasks import TASKS as tasks, solve
    picked = [next(i for i, r in enumerate(st.records) if r.get("task") == t) for t in tasks
              if any(r.get("task") == t for r in st.records)][:count]
    cell = lambda text: text.replace("|", "\\|") or "(empty)"  # noqa: E731
    s.body = "\n".join(["| prompt | answer | " + " | ".join(f"`{n}`" for n in names) + " |",
                        "| --- | --- | " + " | ".join("---" for _ in names) + " |",
                        *[f"| {cell(st.prompts[i])} | {solve(st.prompts[i])} | "
                          + " | ".join(cell(st.completions(n)[i]) for n in names) + " |" for i in picked]])
    return s


# ----------------------------------------------------------------------------- the report

FIGURES = {"family": "study_family.png", "overopt": "study_overoptimisation.png",
           "calibration": "study_calibration.png", "attention": "study_attention.png"}


def sections(st: Study, seeds=(0, 1, 2), betas=(0.005, 0.05, 0.3), lora_ranks=(4, 16, 64)) -> list[Section]:
    return [main_comparison(st, seeds), rl_family(st, seeds, FIGURES["family"]), pretraining(st), architectures(st),
            lora(st, lora_ranks), multi_task(st), add_digits(st),
            reward_design(st), over_optimisation(st, betas, FIGURES["overopt"]), same_budget(st),
            calibration(st, FIGURES["calibration"]), attention(st, FIGURES["attention"]), samples(st),
            human_evaluation(st), cost(st)]


def _plain(value):
    """summary.json's form of a section's numbers: Estimates as dicts, NumPy scalars as numbers."""
    from dataclasses import asdict, is_dataclass

    if is_dataclass(value):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_study_report(out, commands, size, seeds, betas, lora_ranks=(4, 16, 64), incomplete=None) -> dict:
    """report.md, report.html; returns the numbers (summary.json's content). `seeds`: those of the
    seeded comparisons; `betas`: the KL coefficients of the over-optimisation sweep, low to high."""
    out = Path(out)
    st = Study(out)
    done = sections(st, seeds, betas, lora_ranks)
    findings = [f for sec in done for f in sec.findings]
    rendered = dict(zip(map(id, findings), render_family(findings, "holm", ALPHA)))  # one family: the whole report
    family = sum(f.p is not None for f in findings)
    lines = [f"# sftrl study{' (tiny size: checks the machinery, not the quality)' if size == 'tiny' else ''}", "",
             "The questions of the seed document *SFT and RL model evaluation*, each answered by runs of this folder. "
             f"Held-out: the {len(st.prompts)} prompts of `data/prompt.eval.jsonl`, greedy decoding, scored by the task's "
             "verifier. Intervals are 95 %: over prompts for a single run, over seeds and prompts where a comparison ran "
             f"over seeds. Each tested finding shows its p-value and, over the report's {family} tests as one family, "
             "Holm's adjusted p-value with the verdict after adjustment. Every finding line is computed from the "
             "numbers below it.", ""]
    if incomplete:
        lines += [f"**Incomplete:** the study stopped in run `{incomplete}`; sections that need later runs say so.", ""]
    lines += ["## Findings", ""] + [f"- {rendered[id(f)]}" for f in findings] + [""]
    for sec in done:
        lines += [f"## {sec.title}", "", f"*Seed: {sec.seed}.*", ""]
        lines += [f"- **Finding:** {rendered[id(f)]}." for f in sec.findings] + ([""] if sec.findings else [])
        lines += [sec.body, ""]
    lines += ["## Commands", "", "```", *commands, "```", "", "## Versions", "",
              ", ".join(f"{k} {v}" for k, v in versions().items()), ""]
    report = "\n".join(lines)
    atomic_write_text(out / "report.md", report)
    write_html(out, report, "sftrl study")
    from shared.inference import holm
    tested = [f for f in findings if f.p is not None]
    return {"preset": "study", "size": size, "incomplete": incomplete,
            "findings": [rendered[id(f)] for f in findings],
            "tests": [{"finding": f.text, "p": f.p, "holm_p": q} for f, q in zip(tested, holm([f.p for f in tested]))],
            "sections": {sec.title: _plain(sec.numbers) for sec in done}, "versions": versions()}


# ----------------------------------------------------------------------------- the headline table

def headline_table(summary: dict) -> str:
    """The table of the study's answers, from a study's summary.json: `make results` writes it to
    docs/results/generated/study/headline.md, which the docs' study page includes.
    Intervals are 95 %; each finding's Holm-adjusted verdict is in the report."""
    def ci(e):
        return interval(e["diff"], e["low"], e["high"])

    def get(title):
        return next((v for k, v in summary["sections"].items() if k.startswith(title)), None)
    rows = []
    if main := get("SFT against RL"):
        seeds = len(main["seeds"])
        rows.append(("SFT or RL? (§1.2.3, §9.1)", f"PPO − SFT, {seeds} seeds (seed × prompt interval)",
                     f"exact match {ci(main['exact_match_difference'])}; partial credit "
                     f"{ci(main['partial_credit_difference'])}"))
    if family := get("The RL family"):
        rows.append(("the RL family (§3.2)", "− SFT, exact match, 3 seeds each, declared settings",
                     ", ".join(f"{label} {ci(v['exact_match_difference'])}" for label, v in family.items())))
    if pre := get("Pretraining"):
        rows.append(("pretraining (§2.1.3, §3.1.2)", "SFT exact match: clean text − none; contaminated − clean",
                     f"{ci(pre['sft_exact_match_difference'])}; {ci(pre['contaminated_minus_clean'])} (SFT loss on "
                     f"the references, clean − none: {ci(pre['reference_loss_difference'])})"))
    if arch := get("Architectures"):
        rows.append(("architecture (§7.2.2)", "GPT-2-style, Llama-style − BERT-style, from random weights",
                     "SFT " + ", ".join(ci(arch["sft_exact_match_vs_bert"][a]) for a in ("gpt2", "llama")) +
                     "; RL " + ", ".join(ci(arch["rl_exact_match_vs_bert"][a]) for a in ("gpt2", "llama"))))
    if lora := get("LoRA"):
        rows.append(("LoRA (§2.2.3)", "LoRA − full fine-tuning, exact match, same steps",
                     ", ".join(f"rank {r.replace('+', ' + ')} ({v['trainable_share']:.0%} trainable) "
                               f"{ci(v['exact_match_difference'])}" for r, v in lora["ranks"].items())))
    if multi := get("One multi-task model"):
        rows.append(("multi-task (§2.2.2, §3.1.4)", "one model per task − one for all, same steps",
                     ", ".join(f"{t} {ci(v['difference'])}" for t, v in multi.items())))
    if add := get("The add task"):
        best = max(add, key=lambda n: add[n]["exact_match"])
        rows.append(("the add task", f"per-digit accuracy of `{best}`", f"exact {add[best]['exact_match']:.3f}; units "
                     f"{add[best]['units']:.2f}, tens {add[best]['tens']:.2f}, hundreds {add[best]['hundreds']:.2f}"))
    if design := get("Reward design"):
        rows.append(("reward design (§3.2.2, §9.4)", "shaped − sparse verifier; verifier − reward model",
                     f"{ci(design['shaped_minus_sparse'])}; {ci(design['verifier_minus_reward_model'])}"))
    if over := get("Reward over-optimisation"):
        gao = over.get("gao") or {}
        fit = "" if not gao else f"; Gao fit α {gao['alpha']:.3f}, β {gao['beta']:.3f}" + (
            f", gold peak at KL {gao['kl_peak']:.2f}" if gao.get("kl_peak") is not None else ", no interior peak")
        rows.append(("over-optimisation (§3.2.2)", "against the reward model, β = 0.005 (test: p < 0.05 fires "
                     "≤ 5 % on a flat gold curve)", over["test"]["verdict"] + fit))
    if budget := get("When to pick SFT or RL"):
        rows.append(("same FLOPs, same labels (§9.1)", "RL − SFT given the RL model's FLOPs; SFT on every RL prompt's "
                     "label, same FLOPs, − RL", f"{ci(budget['rl_minus_sft_same_flops'])}; "
                     f"{ci(budget['sft_labels_minus_rl'])}"))
    if cal := get("Calibration"):
        rows.append(("calibration (§8.3.2)", "ECE after − before temperature scaling (fitted on the other half)",
                     ", ".join(f"{label} {interval(*v['ece_difference'])} (T {v['temperature']:.2f})"
                               for label, v in cal.items())))
    if cost := get("Cost"):
        if "sft" in cost and "rl_ppo" in cost and cost["sft"]["flops"] and cost["rl_ppo"]["flops"]:
            rows.append(("cost (§9.3)", "PPO / SFT", f"{cost['rl_ppo']['seconds'] / cost['sft']['seconds']:.1f}× the wall "
                         f"time, {cost['rl_ppo']['flops'] / cost['sft']['flops']:.1f}× the FLOPs"))
    return "\n".join(["| question (seed) | comparison | result [95% CI] |", "| --- | --- | --- |",
                      *[f"| {q} | {c} | {r} |" for q, c, r in rows]])


if __name__ == "__main__":  # python -m sftrl.reports.study DIR: the headline table of DIR/summary.json
    import sys
    print(headline_table(json.loads((Path(sys.argv[1]) / "summary.json").read_text())))
