"""`sftrl pipeline --preset study`: the study the seed asks for, as runs and then a report.

Every run is one `sftrl` command (the same code path as typing it), written into its own folder
under OUT; the report (sftrl/reports/study.py) is computed from those folders' files only, so it
can be re-rendered at any time and holds no number a run did not write.

    data                                the built-in data (and two files derived from it)
    pretrain, pretrain_contaminated     causal-LM pretraining on text without any solved task instance /
                                        on as many "prompt = answer" lines (the contaminated variant)
    sft, sft_scratch, sft_contaminated  SFT from the clean pretrained model / from random weights / from
                                        the contaminated one (same tokenizer and architecture)
    sft_lora_r<rank>[_embeddings]       LoRA SFT from the pretrained model, ranks LORA_RANKS, same steps;
                                        at the middle rank also with the embeddings trained
    sft_task_<task>                     one model per task, each with the multi-task model's steps
    reward_model, rl_ppo                the main chain; rl_ppo against SFT is the main comparison
    sft_compute                         SFT given the RL model's FLOPs (its SFT and its PPO run)
    sft_labels                          SFT on the RL prompts' references (every prompt labelled), the
                                        same steps as sft_compute
    sft_seed<k>                         SFT again, seeds 1 and 2
    rl_<algorithm>[_seed<k>], dpo[_seed<k>]
                                        the RL family (PPO, GRPO, RLOO, REINFORCE) and DPO, each from
                                        the SFT model of its seed, with the settings of FAMILY (declared
                                        before any run, the same for every seed)
    rl_reward_{partial,exact,model}     shaped vs sparse verifier vs learned reward model
    rl_rm_beta_{low,high}               the reward model with less / more KL penalty (over-optimisation)
    rl_scratch                          RL after SFT from random weights (pretraining's effect on RL)
    sft_<arch>, rl_<arch>               the same from-scratch SFT and short RL with a GPT-2-style and a
                                        Llama-style model of the same size (arch: gpt2, llama)
    eval                                every model on the held-out prompts (one `sftrl eval`)
    human_eval                          the blind A/B sheet of SFT vs the best RL model, chosen on
                                        held-out prompts that are not on the sheet

`--resume` skips the runs that finished and resumes the one that was interrupted.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from shared.algorithms import ALGORITHMS
from shared.errors import SftrlError
from shared.interrupt import EXIT_INTERRUPTED
from shared.io import atomic_write_text
from shared.tasks import TASKS
from sftrl.pipeline.study_design import FAMILY, family_runs, seed_suffix

DECODERS = ("gpt2", "llama")  # the architectures compared with the BERT-style model from scratch
LORA_RANKS = (4, 16, 64)      # the LoRA sweep, each at the SFT run's steps and LoRA's default lr

@dataclass
class StudySize:
    """The flags of each kind of run. `full` fits in 30 min on 2 cores; `tiny` checks the machinery."""
    sizes: dict | None
    pretrain: list
    sft: list
    reward_model: list
    rl: list           # every RL-family run (each algorithm adds its FAMILY flags)
    short_rl: list     # the reward-design, over-optimisation, from-scratch and architecture runs
    dpo: list
    dpo_pairs: str     # "samples": pairs from the SFT model's samples ranked by the verifier; "builtin"
    lora_ranks: tuple = LORA_RANKS
    seeds: tuple = (0, 1, 2)
    beta_low: float = 0.005    # the KL coefficients of the over-optimisation sweep, beside PPO's default
    beta_high: float = 0.3
    human_eval_prompts: int = 40
    kl_samples: int = 2        # sampled completions per prompt and model for eval's Monte-Carlo KL
    seconds: dict = field(default_factory=dict)  # estimated seconds per kind of run, 2 cores

    @property
    def betas(self) -> tuple:
        """The KL coefficients of the over-optimisation sweep: low, PPO's default, high."""
        from shared.config import PPOConfig
        return self.beta_low, PPOConfig().kl_coef, self.beta_high


SIZES = {
    "full": StudySize(
        sizes=None,
        pretrain=["--steps", "1000", "--eval-every", "250"],
        sft=[],
        reward_model=[],
        rl=[],
        short_rl=["--iterations", "60"],
        dpo=["--pairs-from-samples", "4", "--steps", "600"], dpo_pairs="samples",
        # the longest run of each kind in the full study of 2026-12-04 on this project's 2-core machine
        # (1,496 s of runs before sft_labels took sft_compute's steps), rounded up
        seconds={"data": 1, "pretrain": 28, "sft": 20, "lora": 22, "reward_model": 31, "ppo": 81, "short_rl": 56,
                 "family": 42, "dpo": 40, "compute": 65, "eval": 62, "human_eval": 1, "report": 5}),
    "tiny": StudySize(
        sizes={"sft.train": 48, "sft.eval": 16, "prompt.train": 64, "prompt.eval": 24, "preference.train": 32,
               "preference.eval": 16, "text.train": 200, "text.eval": 16, "text_contaminated.train": 200,
               "text_contaminated.eval": 16},
        pretrain=["--steps", "6", "--eval-every", "3", "--batch-size", "8"],
        sft=["--steps", "6", "--eval-every", "3", "--batch-size", "8"],
        reward_model=["--epochs", "1"],
        rl=["--iterations", "2", "--batch-size", "8", "--minibatch-size", "4", "--ppo-epochs", "1", "--no-xla"],
        short_rl=["--iterations", "2", "--batch-size", "8", "--minibatch-size", "4", "--ppo-epochs", "1", "--no-xla"],
        dpo=["--steps", "4", "--batch-size", "4", "--eval-every", "2"], dpo_pairs="builtin",
        lora_ranks=(2, 4), human_eval_prompts=6,
        seconds={"data": 1, "pretrain": 3, "sft": 3, "lora": 3, "reward_model": 5, "ppo": 6, "short_rl": 5,
                 "family": 5, "dpo": 3, "compute": 3, "eval": 10, "human_eval": 2, "report": 10}),
}


@dataclass
class Run:
    """One command of the study: `argv(out)` its arguments (a function, because some depend on
    earlier runs), `done` the file that says it finished, `kind` its estimate's key."""
    name: str
    kind: str
    argv: object
    done: str = "trainer_state.json"
    resumable: bool = True


def _data(out, name) -> Path:
    return Path(out) / "data" / name


class _Plan:
    """The list of runs being built; each run's argv is a function of OUT."""

    def __init__(self, size: StudySize, seed: int):
        self.size, self.seed, self.runs = size, seed, []

    def add(self, name, kind, argv, **kw):
        self.runs.append(Run(name, kind, argv, **kw))

    def sft(self, name, *extra, data="sft.train.jsonl", init="pretrain", repeat=0, kind="sft"):
        """An SFT run from the pretrained folder `init` (None: random weights); `extra` items may be
        functions of OUT (paths, or steps known only once earlier runs finished)."""
        self.add(name, kind, lambda o: [
            "sft", "--data", _data(o, data), "--eval-data", _data(o, "sft.eval.jsonl"),
            *(["--init", o / init] if init else []), "--out", o / name, "--seed", self.seed + repeat,
            *self.size.sft, *[a(o) if callable(a) else a for a in extra]])

    def rl(self, name, policy, flags, *extra, repeat=0, kind="ppo"):
        """An RL run from the SFT folder `policy`; `extra` items may be functions of OUT."""
        self.add(name, kind, lambda o: [
            "rl", "--policy", o / policy, "--prompts", _data(o, "prompt.train.jsonl"), "--out", o / name,
            "--seed", self.seed + repeat, *flags, *[a(o) if callable(a) else a for a in extra]])

    def pretrain(self, name, text, *extra):
        s = self.size
        self.add(name, "pretrain", lambda o: [
            "pretrain", "--objective", "clm", "--data", _data(o, f"{text}.train.jsonl"), "--eval-data",
            _data(o, f"{text}.eval.jsonl"), "--out", o / name, "--seed", self.seed, *s.pretrain,
            *[a(o) if callable(a) else a for a in extra]])


def plan(size: StudySize, seed: int = 0) -> list[Run]:
    """Every run of the study, in order (each needs only runs before it). Repeat k of a seeded
    comparison is seeded seed + k and named with `seed_suffix(k)`."""
    s, p = size, _Plan(size, seed)
    p.pretrain("pretrain", "text")                              # text without any solved task instance
    p.pretrain("pretrain_contaminated", "text_contaminated",    # as many "prompt = answer" lines, with the
               "--tokenizer", lambda o: o / "pretrain" / "tokenizer.json")  # same tokenizer: losses compare
    p.sft("sft")
    p.sft("sft_scratch", "--tokenizer", lambda o: o / "pretrain" / "tokenizer.json",
          "--model-config", lambda o: o / "pretrain" / "config.json", init=None)
    p.sft("sft_contaminated", init="pretrain_contaminated")
    for rank in s.lora_ranks:
        p.sft(f"sft_lora_r{rank}", "--lora-rank", rank, kind="lora")
    p.sft(lora_embeddings_run(s), "--lora-rank", s.lora_ranks[1], "--lora-embeddings", kind="lora")
    for task in TASKS:
        p.sft(f"sft_task_{task}", "--tasks", task)
    p.add("reward_model", "reward_model", lambda o: [
        "reward-model", "--data", _data(o, "preference.train.jsonl"), "--eval-data", _data(o, "preference.eval.jsonl"),
        "--init", o / "sft", "--out", o / "reward_model", "--seed", seed, *s.reward_model])
    p.rl("rl_ppo", "sft", s.rl)
    p.sft("sft_compute", "--steps", lambda o: compute_matched_steps(o), kind="compute")
    # every RL prompt labelled, given the same FLOPs: ten times the data needs more than SFT's 600 steps
    p.sft("sft_labels", "--steps", lambda o: json.loads((o / "sft_compute" / "trainer_state.json").read_text())["step"],
          data="sft.rl_prompts.jsonl", kind="compute")
    dpo_data = "prompt.train.jsonl" if s.dpo_pairs == "samples" else "preference.train.jsonl"
    for k in s.seeds:
        sft = f"sft{seed_suffix(k)}"
        if k:
            p.sft(sft, repeat=k)
        for algorithm, (flags, _) in FAMILY.items():
            name = f"rl_{algorithm}{seed_suffix(k)}"
            if name != "rl_ppo":
                p.rl(name, sft, [*s.rl, *flags], repeat=k, kind="ppo" if ALGORITHMS[algorithm].critic else "family")
        p.add(f"dpo{seed_suffix(k)}", "dpo", lambda o, sft=sft, k=k: [
            "dpo", "--policy", o / sft, "--data", _data(o, dpo_data), "--out", o / f"dpo{seed_suffix(k)}",
            "--seed", seed + k, *s.dpo])

    def reward_model(o):
        return f"model:{o / 'reward_model'}"
    p.rl("rl_reward_partial", "sft", s.short_rl, "--reward", "task", kind="short_rl")
    p.rl("rl_reward_exact", "sft", s.short_rl, "--reward", "task-exact", kind="short_rl")
    p.rl("rl_reward_model", "sft", s.short_rl, "--reward", reward_model, kind="short_rl")
    p.rl("rl_rm_beta_low", "sft", s.short_rl, "--reward", reward_model, "--kl-coef", s.beta_low, kind="short_rl")
    p.rl("rl_rm_beta_high", "sft", s.short_rl, "--reward", reward_model, "--kl-coef", s.beta_high, kind="short_rl")
    p.rl("rl_scratch", "sft_scratch", s.short_rl, "--reward", "task", kind="short_rl")
    for architecture in DECODERS:  # beside sft_scratch / rl_scratch (BERT-style): the same runs, another model
        p.sft(f"sft_{architecture}", "--tokenizer", lambda o: o / "pretrain" / "tokenizer.json",
              "--architecture", architecture, init=None)
        p.rl(f"rl_{architecture}", f"sft_{architecture}", s.short_rl, "--reward", "task", kind="short_rl")
    p.add("eval", "eval", lambda o: [
        "eval", *[a for name in evaluated(p.runs) for a in ("--model", o / name)],
        "--prompts", _data(o, "prompt.eval.jsonl"), "--kl-samples", s.kl_samples, "--out", o / "eval", "--seed", seed],
        done="eval.json", resumable=False)
    p.add("human_eval", "human_eval", lambda o: [
        "human-eval", "export", "--model", o / "sft", "--model", o / best_rl_model(o, s.human_eval_prompts), "--prompts",
        _data(o, "human_eval.prompts.jsonl"), "--out", o / "human_eval", "--seed", seed], done="pairs.jsonl",
        resumable=False)
    return p.runs


def lora_embeddings_run(size: StudySize) -> str:
    """The LoRA run that also trains the embeddings (the sweep's middle rank)."""
    return f"sft_lora_r{size.lora_ranks[1]}_embeddings"


def evaluated(runs) -> list[str]:
    """The model folders `eval` compares, the main SFT model first (the baseline of its KL)."""
    return [r.name for r in runs if r.name.startswith(("sft", "rl_", "dpo"))]


def compute_matched_steps(out) -> int:
    """Steps of SFT that cost the RL model's FLOPs: its SFT run plus its PPO run, counted by the cost
    section's counter (pretraining, shared by both, is left out of both sides)."""
    from sftrl.reports.study import run_flops

    sft = json.loads((Path(out) / "sft" / "trainer_state.json").read_text())
    flops = {name: run_flops(out, name) for name in ("sft", "rl_ppo")}
    if not all(flops.values()):
        raise SftrlError(f"{out}: cannot count the FLOPs of " + " and ".join(n for n, f in flops.items() if not f) +
                         " (a model.safetensors, trainer_state.json or metrics.jsonl is missing)")
    return max(1, round((flops["sft"] + flops["rl_ppo"]) / (flops["sft"] / sft["step"])))


def best_rl_model(out, sheet_prompts: int) -> str:
    """The RL run of seed 0 (any algorithm, DPO too) with the highest exact match on the held-out
    prompts that are NOT on the human-evaluation sheet (the sheet takes the first `sheet_prompts`):
    choosing on the sheet's own prompts would favour the model that was lucky on them."""
    from sftrl.reports.study import Study

    st = Study(out)  # per-prompt scores from eval.json's completions, as the report reads them
    completed = {Path(m).name for m in st.evaluation["completions"]}
    rl = [n for names in family_runs((0,)).values() for n in names if n in completed]
    return max(rl, key=lambda n: tuple(float(st.scores(n, m)[sheet_prompts:].mean())
                                       for m in ("exact_match", "partial_credit")))


def write_study_data(out, seed, size: StudySize):
    """The built-in data, plus the files the study derives from it: the RL prompts with their
    references as SFT records (the label-rich bound) and the prompts of the human-evaluation sheet."""
    from shared.data import load_jsonl
    from shared.tasks import write_builtin_data

    data = Path(out) / "data"
    write_builtin_data(data, seed=seed, sizes=size.sizes)
    prompts = load_jsonl(data / "prompt.train.jsonl", "prompt")
    atomic_write_text(data / "sft.rl_prompts.jsonl", "".join(json.dumps(
        {"prompt": r["prompt"], "completion": r["reference"], "task": r["task"]}) + "\n" for r in prompts))
    held_out = load_jsonl(data / "prompt.eval.jsonl", "prompt")[:size.human_eval_prompts]
    atomic_write_text(data / "human_eval.prompts.jsonl", "".join(json.dumps(r) + "\n" for r in held_out))


def _finished_before(out, resume: bool) -> dict:
    """The seconds of each run an earlier invocation finished ({} for a new study)."""
    seconds_file = Path(out) / "stage_seconds.json"
    if not resume and seconds_file.exists():
        raise SftrlError(f"--out: {out} already holds a study; add --resume to finish it, or choose another directory")
    if resume and not seconds_file.exists():
        raise SftrlError(f"--resume: {out} holds no study to resume (no stage_seconds.json)")
    return json.loads(seconds_file.read_text()) if resume else {}


def resume_command(out, seed: int, size: str) -> str:
    return (f"sftrl pipeline --preset study --out {out}" + (f" --seed {seed}" if seed else "")
            + (" --size tiny" if size == "tiny" else "") + " --resume")


def _stop(out, name: str, code: int, resume: str):
    """After a failed or interrupted run (its report written): say how to finish, and leave."""
    if code == EXIT_INTERRUPTED:
        sys.stderr.write(f"study stopped in run `{name}`; the report of what finished is in {out}/report.md; "
                         f"to finish the study run: {resume}\n")
        raise SystemExit(EXIT_INTERRUPTED)
    raise SftrlError(f"study run `{name}` failed (exit code {code}); see the message above. The report of "
                     f"what finished is in {out}/report.md; after fixing the cause run: {resume}")


def run(out, run_command, size: str = "full", seed: int = 0, quiet: bool = False, resume: bool = False, log=print):
    """Every run of the plan not finished yet, then the report. On a failed or interrupted run:
    the report of what finished, and the command that resumes."""
    from shared.progress import duration
    from sftrl.pipeline.progress import time_left
    from sftrl.reports.study import write_study_report

    study = SIZES[size]
    out = Path(out)
    runs = plan(study, seed)
    finished = _finished_before(out, resume)
    estimates = {"data": study.seconds["data"], **{r.name: study.seconds[r.kind] for r in runs},
                 "report": study.seconds["report"]}
    commands = [f"sftrl data --out {out / 'data'} --seed {seed}   # and the two derived files (sftrl/pipeline/study.py)"]

    def report(incomplete=None):
        return write_study_report(out, commands, size, study.seeds, study.betas, study.lora_ranks, incomplete=incomplete)

    def record(name, seconds):
        finished[name] = round(seconds, 1)
        atomic_write_text(out / "stage_seconds.json", json.dumps(finished, indent=2) + "\n")

    def announce(name):
        log(f"\n== study: {name} == (run {len(finished) + 1} of {len(estimates)}; about "
            f"{duration(time_left(estimates, finished))} left)")

    out.mkdir(parents=True, exist_ok=True)
    if "data" not in finished:
        announce("data")
        t0 = time.perf_counter()
        write_study_data(out, seed, study)
        record("data", time.perf_counter() - t0)
    q = ["--quiet"] if quiet else []
    for r in runs:
        argv = [str(a) for a in r.argv(out)]
        if r.name not in ("eval", "human_eval"):
            argv += q
        commands.append("sftrl " + " ".join(argv))
        if r.name in finished and (out / r.name / r.done).exists():
            continue
        announce(r.name)
        if r.resumable and (out / r.name / "checkpoints").exists():
            argv.append("--resume")
        log(f"$ sftrl {' '.join(argv)}")
        t0 = time.perf_counter()
        code = run_command(argv)
        if code != 0:
            report(incomplete=r.name)
            _stop(out, r.name, code, resume_command(out, seed, size))
        record(r.name, time.perf_counter() - t0)
    announce("report")
    t0 = time.perf_counter()
    summary = report()
    record("report", time.perf_counter() - t0)
    summary.update(stage_seconds=finished, seconds=round(sum(finished.values()), 1))
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    log(f"\nstudy done in {summary['seconds']:.0f} s of runs -> {out}/report.md, {out}/report.html")
    for line in summary["findings"][:6]:
        log(f"  {line}")
    return summary
