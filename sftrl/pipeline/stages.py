"""`sftrl pipeline`: the main job. Built-in data -> causal-LM pretraining on the clean text
(text.train: no solved task instance) -> SFT from the pretrained model (PyTorch) -> reward model and PPO (TensorFlow) -> evaluation of
SFT against RL -> report.md with tables and plots. `--preset study` runs the whole study
(sftrl/pipeline/study.py) instead.

Each stage is the same code path as its own command (the pipeline calls `sftrl.cli.main`), so
the report's "commands" section can be pasted to rerun any stage alone.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from shared.errors import SftrlError
from shared.interrupt import EXIT_INTERRUPTED
from shared.io import atomic_write_text
from shared.progress import duration
from sftrl.pipeline.progress import time_left

PRESETS = {
    # under a minute on 2 cores: SFT from scratch on the 400 labelled examples, a few PPO
    # iterations, evaluation and report -- the chain and a first comparison. It skips pretraining
    # and the reward model, which need more time than a minute has to matter.
    "quick": dict(sizes={"sft.eval": 40, "prompt.train": 200, "prompt.eval": 200, "preference.train": 120,
                         "preference.eval": 40, "text.train": 200, "text.eval": 40},
                  pretrain=None, reward_model=None,
                  sft=["--steps", "300", "--eval-every", "150", "--lr", "2e-3"],
                  ppo=["--iterations", "8", "--batch-size", "32", "--minibatch-size", "16", "--ppo-epochs", "2",
                       "--lr", "3e-4", "--no-xla"]),  # a few iterations do not pay back XLA's compile
    # `make run`, the figures of the docs' home page: under 5 minutes on 2 cores
    "default": dict(sizes=None, pretrain=["--steps", "1000", "--eval-every", "250"], sft=[], reward_model=[], ppo=[]),
}


# What each stage took on 2 cores (AVX2 AMD EPYC), for the estimate of the time left; a run
# scales them by the pace of its own finished stages.
STAGE_SECONDS = {
    "quick": {"data": 0.1, "sft": 14, "ppo": 22, "eval": 1, "report": 4},
    "default": {"data": 1, "pretrain": 40, "sft": 20, "reward model": 45, "ppo": 117, "eval": 2, "report": 26},
}


def _run(argv, commands, log, run_command):
    commands.append("sftrl " + " ".join(map(str, argv)))
    log(f"$ {commands[-1]}")
    code = run_command([str(a) for a in argv])
    if code == EXIT_INTERRUPTED:  # Ctrl-C: the stage wrote its checkpoint and said so
        sys.stderr.write(f"pipeline stopped in stage `{argv[0]}`; to finish it run: {commands[-1]} --resume\n")
        raise SystemExit(EXIT_INTERRUPTED)
    if code != 0:
        raise SftrlError(f"pipeline stage `{argv[0]}` failed (exit code {code}); see the message above")


def run(preset: str, out, run_command, quiet: bool = False, seed: int = 0, log=print, architecture: str = "bert"):
    """Every stage, then the report. run_command(argv) -> exit code runs one `sftrl` command
    (the CLI's `main`, passed in: the CLI calls the pipeline, not the other way round).
    architecture: of the model the first training stage builds from scratch (the later ones
    start from it)."""
    from shared.tasks import write_builtin_data

    if preset not in PRESETS:
        raise SftrlError(f"--preset: unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    p = PRESETS[preset]
    out = Path(out)
    if (out / "report.md").exists() or (out / "sft" / "checkpoints").exists():
        raise SftrlError(f"--out: {out} already holds a pipeline run; choose another directory or delete it")
    q = ["--quiet"] if quiet else []
    scratch = ["--architecture", architecture] if architecture != "bert" else []
    commands, finished, started = [], {}, time.perf_counter()
    estimates, current = STAGE_SECONDS[preset], {}

    def stage(name):
        """Close the running stage (its seconds into `finished`), open the next, say what is left."""
        now = time.perf_counter()
        if current:
            finished[current["name"]] = round(now - current["start"], 1)
        current.update(name=name, start=now)
        if name is not None:
            log(f"\n== {name} == (stage {len(finished) + 1} of {len(estimates)}; about "
                f"{duration(time_left(estimates, finished))} left in the preset)")

    stage("data")
    data = out / "data"
    write_builtin_data(data, seed=seed, sizes=p["sizes"])
    commands.append(f"sftrl data --out {data} --seed {seed}" + ("  # with the quick preset's smaller sizes" if p["sizes"] else ""))
    if p["pretrain"] is not None:
        stage("pretrain")
        _run(["pretrain", "--objective", "clm", "--data", data / "text.train.jsonl", "--eval-data", data / "text.eval.jsonl",
              "--out", out / "pretrain", "--seed", seed, *scratch, *p["pretrain"], *q], commands, log, run_command)
    stage("sft")
    init = ["--init", out / "pretrain"] if p["pretrain"] is not None else scratch
    _run(["sft", "--data", data / "sft.train.jsonl", "--eval-data", data / "sft.eval.jsonl", *init,
          "--out", out / "sft", "--seed", seed, *p["sft"], *q], commands, log, run_command)
    if p["reward_model"] is not None:
        stage("reward model")
        _run(["reward-model", "--data", data / "preference.train.jsonl", "--eval-data", data / "preference.eval.jsonl",
              "--init", out / "sft", "--out", out / "reward_model", "--seed", seed, *p["reward_model"], *q],
             commands, log, run_command)
    stage("ppo")
    _run(["ppo", "--policy", out / "sft", "--prompts", data / "prompt.train.jsonl", "--eval-prompts",
          data / "prompt.eval.jsonl", "--out", out / "ppo", "--seed", seed, *p["ppo"], *q], commands, log, run_command)
    stage("eval")
    _run(["eval", "--model", out / "sft", "--model", out / "ppo", "--prompts", data / "prompt.eval.jsonl",
          "--out", out / "eval", "--seed", seed], commands, log, run_command)
    stage("report")
    from sftrl.reports.pipeline import write_report
    summary = write_report(out, commands, preset)
    stage(None)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["stage_seconds"] = finished
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    log("\n" + one_screen(summary, out))
    return summary


def one_screen(summary, out) -> str:
    e = summary["exact_match"]
    kl = summary["sequence_kl_to_sft"]  # eval.json's Monte-Carlo sequence KL of RL to SFT
    kl_text = "off" if kl is None else f"{kl['mean']:.3f} [{kl['ci95'][0]:.3f}, {kl['ci95'][1]:.3f}]"
    lines = [f"pipeline done in {summary['seconds']} s -> {out}/report.md",
             f"  held-out exact match: SFT {e['sft']:.3f}  RL {e['rl']:.3f}  difference {e['difference']:+.3f} "
             f"[{e['ci95'][0]:+.3f}, {e['ci95'][1]:+.3f}]",
             f"  KL(RL || SFT) per sampled completion: {kl_text}" + (
                 f"   reward model held-out accuracy: {summary['reward_model_accuracy']:.3f}"
                 if summary["reward_model_accuracy"] is not None else ""),
             f"  {summary['ngram']['order']}-gram Kneser-Ney baseline: {summary['ngram']['perplexity']:.2f} "
             "perplexity per word on text.eval"]
    return "\n".join(lines)
