"""`sftrl pipeline --preset study`: the study the seed asks for, as runs and then a report.

Every run is one `sftrl` command (the same code path as typing it), written into its own folder
under OUT; the report (sftrl/reports/study.py) is computed from those folders' files only, so it
can be re-rendered at any time and holds no number a run did not write.

    data, pretrain                      the built-in data; causal-LM pretraining on its text split
    sft, sft_scratch                    SFT from the pretrained model / from random weights (same
                                        tokenizer and architecture: only the start differs)
    sft_lora                            LoRA SFT from the pretrained model
    sft_task_<task>                     one model per task, each with the multi-task model's steps
    sft_labels                          SFT on the RL prompts' references (the label-rich bound)
    reward_model, rl_ppo                the main chain; rl_ppo against SFT is the main comparison
    sft_compute                         SFT given RL's wall time (the same compute)
    sft_seed<k>, rl_ppo_seed<k>         the main comparison again, seeds 1 and 2
    rl_grpo, rl_rloo, rl_reinforce, dpo the rest of the RL family
    rl_reward_{partial,exact,model}     shaped vs sparse verifier vs learned reward model
    rl_rm_beta_{low,high}               the reward model with less / more KL penalty (over-optimisation)
    rl_scratch                          RL after SFT from random weights (pretraining's effect on RL)
    sft_<arch>, rl_<arch>               the same from-scratch SFT and short RL with a GPT-2-style and a
                                        Llama-style model of the same size (arch: gpt2, llama)
    eval                                every model on the held-out prompts (one `sftrl eval`)
    human_eval                          the blind A/B sheet of SFT vs the best RL model

`--resume` skips the runs that finished and resumes the one that was interrupted.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import SftrlError
from shared.interrupt import EXIT_INTERRUPTED
from shared.io import atomic_write_text
from shared.tasks import TASKS

DECODERS = ("gpt2", "llama")  # the architectures compared with the BERT-style model from scratch

@dataclass
class StudySize:
    """The flags of each kind of run. `full` fits in 30 min on 2 cores; `tiny` checks the machinery."""
    sizes: dict | None
    pretrain: list
    sft: list
    reward_model: list
    ppo: list          # the main comparison's RL (PPO's defaults)
    short_rl: list     # the reward-design, over-optimisation and from-scratch runs
    family: dict       # algorithm -> its flags
    dpo: list
    dpo_pairs: str     # "samples": pairs from the SFT model's samples ranked by the verifier; "builtin"
    lora: list
    compute_steps: tuple  # (least, most) steps of the compute-matched SFT
    seeds: tuple = (0, 1, 2)
    beta_low: float = 0.005    # the KL coefficients of the over-optimisation sweep, beside PPO's default
    beta_high: float = 0.3
    human_eval_prompts: int = 40
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
        ppo=[],
        short_rl=["--iterations", "60"],
        family={"grpo": ["--iterations", "150", "--lr", "3e-4", "--ppo-epochs", "1", "--minibatch-size", "64"],
                "rloo": ["--iterations", "150", "--lr", "3e-4"],
                "reinforce": ["--iterations", "150", "--lr", "3e-4"]},
        dpo=["--pairs-from-samples", "4", "--steps", "600"], dpo_pairs="samples",
        lora=["--lora-rank", "8", "--lr", "3e-3"],
        compute_steps=(600, 4000),
        # the longest run of each kind in the full study of 2026-12-02 on this project's 2-core machine
        # (957 s in all), x 1.5: the earlier AVX2 EPYC machine took about 1.8x as long per run
        seconds={"data": 1, "pretrain": 53, "sft": 46, "reward_model": 39, "ppo": 94, "short_rl": 69,
                 "family": 51, "dpo": 47, "compute": 83, "eval": 23, "human_eval": 1, "report": 8}),
    "tiny": StudySize(
        sizes={"sft.train": 48, "sft.eval": 16, "prompt.train": 64, "prompt.eval": 24, "preference.train": 32,
               "preference.eval": 16, "text.train": 200, "text.eval": 16},
        pretrain=["--steps", "6", "--eval-every", "3", "--batch-size", "8"],
        sft=["--steps", "6", "--eval-every", "3", "--batch-size", "8"],
        reward_model=["--epochs", "1"],
        ppo=["--iterations", "2", "--batch-size", "8", "--minibatch-size", "4", "--ppo-epochs", "1", "--no-xla"],
        short_rl=["--iterations", "2", "--batch-size", "8", "--minibatch-size", "4", "--ppo-epochs", "1", "--no-xla"],
        family={name: ["--iterations", "2", "--batch-size", "8", "--minibatch-size", "8", "--ppo-epochs", "1",
                       "--no-xla"] for name in ("grpo", "rloo", "reinforce")},
        dpo=["--steps", "4", "--batch-size", "4", "--eval-every", "2"], dpo_pairs="builtin",
        lora=["--lora-rank", "2", "--lr", "3e-3"],
        compute_steps=(6, 12), human_eval_prompts=6,
        seconds={"data": 1, "pretrain": 3, "sft": 3, "reward_model": 5, "ppo": 6, "short_rl": 5, "family": 5,
                 "dpo": 3, "compute": 3, "eval": 10, "human_eval": 2, "report": 10}),
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

    def sft(self, name, *extra, data="sft.train.jsonl", init=True, repeat=0, kind="sft"):
        """An SFT run from the pretrained model (or not); `extra` items may be functions of OUT
        (paths, or steps known only once earlier runs finished)."""
        self.add(name, kind, lambda o: [
            "sft", "--data", _data(o, data), "--eval-data", _data(o, "sft.eval.jsonl"),
            *(["--init", o / "pretrain"] if init else []), "--out", o / name, "--seed", self.seed + repeat,
            *self.size.sft, *[a(o) if callable(a) else a for a in extra]])

    def rl(self, name, policy, flags, *extra, repeat=0, kind="ppo"):
        """An RL run from the SFT folder `policy`; `extra` items may be functions of OUT."""
        self.add(name, kind, lambda o: [
            "rl", "--policy", o / policy, "--prompts", _data(o, "prompt.train.jsonl"), "--out", o / name,
            "--seed", self.seed + repeat, *flags, *[a(o) if callable(a) else a for a in extra]])


def plan(size: StudySize, seed: int = 0) -> list[Run]:
    """Every run of the study, in order (each needs only runs before it). Every run is seeded with
    `seed`, but the main comparison's repeats, seeded seed + 1, seed + 2."""
    s, p = size, _Plan(size, seed)
    p.add("pretrain", "pretrain", lambda o: [
        "pretrain", "--objective", "clm", "--data", _data(o, "text.train.jsonl"), "--eval-data",
        _data(o, "text.eval.jsonl"), "--out", o / "pretrain", "--seed", seed, *s.pretrain])
    p.sft("sft")
    p.sft("sft_scratch", "--tokenizer", lambda o: o / "pretrain" / "tokenizer.json",
          "--model-config", lambda o: o / "pretrain" / "config.json", init=False)
    p.sft("sft_lora", *s.lora)
    for task in TASKS:
        p.sft(f"sft_task_{task}", "--tasks", task)
    p.sft("sft_labels", data="sft.rl_prompts.jsonl")
    p.add("reward_model", "reward_model", lambda o: [
        "reward-model", "--data", _data(o, "preference.train.jsonl"), "--eval-data", _data(o, "preference.eval.jsonl"),
        "--init", o / "sft", "--out", o / "reward_model", "--seed", seed, *s.reward_model])
    p.rl("rl_ppo", "sft", s.ppo)
    p.sft("sft_compute", "--steps", lambda o: compute_matched_steps(o, s), kind="compute")
    for k in s.seeds[1:]:
        p.sft(f"sft_seed{k}", repeat=k)
        p.rl(f"rl_ppo_seed{k}", f"sft_seed{k}", s.ppo, repeat=k)
    for algorithm, flags in s.family.items():
        p.rl(f"rl_{algorithm}", "sft", ["--algorithm", algorithm, *flags], kind="family")
    dpo_data = "prompt.train.jsonl" if s.dpo_pairs == "samples" else "preference.train.jsonl"
    p.add("dpo", "dpo", lambda o: ["dpo", "--policy", o / "sft", "--data", _data(o, dpo_data), "--out", o / "dpo",
                                   "--seed", seed, *s.dpo])

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
              "--architecture", architecture, init=False)
        p.rl(f"rl_{architecture}", f"sft_{architecture}", s.short_rl, "--reward", "task", kind="short_rl")
    p.add("eval", "eval", lambda o: [
        "eval", *[a for name in evaluated(p.runs) for a in ("--model", o / name)],
        "--prompts", _data(o, "prompt.eval.jsonl"), "--out", o / "eval", "--seed", seed], done="eval.json", resumable=False)
    p.add("human_eval", "human_eval", lambda o: [
        "human-eval", "export", "--model", o / "sft", "--model", o / best_rl_model(o), "--prompts",
        _data(o, "human_eval.prompts.jsonl"), "--out", o / "human_eval", "--seed", seed], done="pairs.jsonl",
        resumable=False)
    return p.runs


def evaluated(runs) -> list[str]:
    """The model folders `eval` compares, the main SFT model first (the baseline of its KL)."""
    return [r.name for r in runs if r.name.startswith(("sft", "rl_", "dpo"))]


def compute_matched_steps(out, size: StudySize) -> int:
    """Steps of SFT that take the main RL run's wall time, from the SFT run's own pace."""
    sft = json.loads((Path(out) / "sft" / "trainer_state.json").read_text())
    seconds = json.loads((Path(out) / "stage_seconds.json").read_text())["rl_ppo"]
    per_step = sft["train_seconds"] / sft["step"]
    least, most = size.compute_steps
    return int(min(max(round(seconds / per_step), least), most))


def best_rl_model(out) -> str:
    """The RL run (any algorithm, seed 0) with the highest held-out exact match in eval.json."""
    rows = json.loads((Path(out) / "eval" / "eval.json").read_text())["models"]
    rl = [r for r in rows if Path(r["model"]).name in ("rl_ppo", "rl_grpo", "rl_rloo", "rl_reinforce", "dpo")]
    return Path(max(rl, key=lambda r: (r["exact_match"], r["partial_credit"]))["model"]).name


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
    from sftrl.pipeline.progress import duration, time_left
    from sftrl.reports.study import write_study_report

    study = SIZES[size]
    out = Path(out)
    runs = plan(study, seed)
    finished = _finished_before(out, resume)
    estimates = {"data": study.seconds["data"], **{r.name: study.seconds[r.kind] for r in runs},
                 "report": study.seconds["report"]}
    commands = [f"sftrl data --out {out / 'data'} --seed {seed}   # and the two derived files (sftrl/pipeline/study.py)"]

    def report(incomplete=None):
        return write_study_report(out, commands, size, study.seeds, study.betas, incomplete=incomplete)

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
