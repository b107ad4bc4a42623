# %% [markdown]
# # From SFT to GRPO on the built-in tasks
#
# You will run the project's real commands one after the other: write the built-in data,
# fine-tune a small model on labelled examples (SFT, PyTorch), improve it with GRPO against the
# tasks' verifier (RL, TensorFlow), and evaluate both on the same held-out prompts; then read
# `eval.json` to compare them. Each command is `sftrl.cli.main([...])`, the function behind the
# `sftrl` command line, so every line printed as `$ sftrl ...` can be pasted into a shell.
#
# The sizes are the `quick` preset's (`sftrl pipeline --preset quick`, a few minutes on 2 cores);
# with the environment variable `SFTRL_LESSON_SIZE=tiny` every stage is a handful of steps (the
# test that runs this lesson uses that; the numbers then mean nothing). The runs go to
# `runs/lessons/sft_to_grpo_<size>/` (or under `$SFTRL_LESSON_OUT`).
#
# Open it as a notebook with `jupytext --to notebook docs/lessons/sft_to_grpo.py`.

# %%
import json
import os
import shutil
from pathlib import Path

import shared
from sftrl.cli import main
from sftrl.pipeline.stages import PRESETS
from shared.tasks import write_builtin_data

SIZE = os.environ.get("SFTRL_LESSON_SIZE", "quick")
REPO = Path(shared.__file__).resolve().parents[1]   # the checkout, wherever the notebook runs
OUT = Path(os.environ.get("SFTRL_LESSON_OUT") or REPO / "runs" / "lessons") / f"sft_to_grpo_{SIZE}"
shutil.rmtree(OUT, ignore_errors=True)               # this lesson's own folder: a rerun starts afresh
print(f"size {SIZE}, runs in {OUT}")

# %% [markdown]
# ## The settings
#
# `quick` takes its data sizes and training flags from `sftrl/pipeline/stages.py`, where the
# pipeline's preset reads them (the pipeline runs PPO with the same flags; here they run GRPO).
# `tiny` shrinks everything so that the whole lesson runs in seconds.

# %%
quick = PRESETS["quick"]
if SIZE == "tiny":
    sizes = {"sft.train": 64, "sft.eval": 16, "prompt.train": 16, "prompt.eval": 16}
    sft_flags = ["--steps", "10", "--eval-every", "5", "--lr", "2e-3"]
    rl_flags = ["--iterations", "2", "--batch-size", "8", "--minibatch-size", "4", "--ppo-epochs", "1",
                "--max-new-tokens", "8", "--no-xla"]
    eval_flags = ["--kl-samples", "1", "--max-new-tokens", "8"]
elif SIZE == "quick":
    sizes, sft_flags, rl_flags, eval_flags = quick["sizes"], quick["sft"], quick["ppo"], []
else:
    raise ValueError(f"SFTRL_LESSON_SIZE must be 'tiny' or 'quick', got {SIZE!r}")


def sftrl(*argv):
    """Run one `sftrl` command in this process, as the pipeline does; stop the lesson if it fails."""
    argv = [str(a) for a in argv]
    print("$ sftrl " + " ".join(argv))
    code = main(argv)
    assert code == 0, f"sftrl {argv[0]} exited with {code}"


# %% [markdown]
# ## 1. Data
#
# Four tasks with a checkable answer — copy, reverse, sort, add — as JSONL files: `sft.*`
# (prompt and completion, for SFT) and `prompt.*` (prompts and references, for RL and
# evaluation), among others. `sftrl data --out DIR` writes them at full size; the pipeline's
# presets call the same function with smaller sizes, and so does this lesson.

# %%
data = OUT / "data"
write_builtin_data(data, seed=0, sizes=sizes)
for name in ("sft.train", "prompt.eval"):
    lines = (data / f"{name}.jsonl").read_text().splitlines()
    print(f"{name}: {len(lines)} records, the first: {lines[0]}")

# %% [markdown]
# ## 2. SFT: imitate the labelled answers
#
# A 2-layer model is trained from scratch on (prompt, completion) pairs with the completion-only
# loss: next-token cross-entropy on the answer's tokens, none on the prompt's.

# %%
sftrl("sft", "--data", data / "sft.train.jsonl", "--eval-data", data / "sft.eval.jsonl",
      "--out", OUT / "sft", "--seed", 0, *sft_flags, "--quiet")

# %% [markdown]
# ## 3. GRPO: sample, score, prefer the better samples
#
# For each prompt GRPO samples `--group-size` completions (4 by default), scores each with the
# verifier (`--reward task`: partial credit for every right position), and gives each sample the
# advantage (score − group mean) / group std: better than its siblings, pushed up; worse, pushed
# down; a group whose samples all score alike teaches nothing. The loss is the clipped surrogate
# of PPO plus β times a KL estimate to the SFT model; there is no critic.

# %%
sftrl("rl", "--algorithm", "grpo", "--policy", OUT / "sft", "--prompts", data / "prompt.train.jsonl",
      "--eval-prompts", data / "prompt.eval.jsonl", "--out", OUT / "grpo", "--seed", 0, *rl_flags, "--quiet")

# %% [markdown]
# Every iteration writes a line of `metrics.jsonl`: the mean score of the rollout's samples
# (`objective/scores`), the KL of the policy to the SFT model (`policy/kl_to_reference`) and the
# share of tokens whose ratio was clipped.

# %%
metrics = [json.loads(line) for line in (OUT / "grpo" / "metrics.jsonl").read_text().splitlines()]
print(f"{'iteration':>9s} {'score':>6s} {'KL to SFT':>9s} {'clipfrac':>8s}")
for m in metrics:
    print(f"{m['iteration']:9d} {m['objective/scores']:6.3f} {m['policy/kl_to_reference']:9.4f} "
          f"{m['policy/clipfrac']:8.3f}")

# %% [markdown]
# ## 4. Evaluate both on the same held-out prompts
#
# `sftrl eval` decodes greedily with each model, scores every completion, and compares each model
# with the first: paired differences over the prompts with a bootstrap interval, and the KL of
# each model to the first.

# %%
sftrl("eval", "--model", OUT / "sft", "--model", OUT / "grpo", "--prompts", data / "prompt.eval.jsonl",
      "--out", OUT / "eval", "--seed", 0, *eval_flags)

# %% [markdown]
# ## 5. Read eval.json
#
# `eval.json` holds one entry per model (its measures, and for every model after the first its
# differences from the first) and every completion. The same numbers are in `eval.md`; reading
# the JSON is how a report or a notebook uses them.

# %%
result = json.loads((OUT / "eval" / "eval.json").read_text())
sft, grpo = result["models"]
print(f"{result['count']} held-out prompts")
print(f"{'':18s} {'SFT':>6s} {'GRPO':>6s}")
for measure in ("exact_match", "partial_credit", "bleu", "mean_length_words"):
    print(f"{measure:18s} {sft[measure]:6.3f} {grpo[measure]:6.3f}")
for measure in ("exact_match", "partial_credit"):
    d = grpo[f"{measure}_difference"]
    print(f"GRPO − SFT, {measure}: {d['mean']:+.3f}, 95% interval [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]")
kl = grpo["sequence_kl_to_first"]
print(f"KL(GRPO || SFT) per completion: {kl['mean']:.3f} nats, [{kl['ci95'][0]:.3f}, {kl['ci95'][1]:.3f}]")

# %% [markdown]
# Per task: the verifier's partial credit of each model.

# %%
for task in ("copy", "reverse", "sort", "add"):
    print(f"{task:8s} SFT {sft[f'{task}/partial_credit']:.3f}   GRPO {grpo[f'{task}/partial_credit']:.3f}")

# %% [markdown]
# And a few prompts with both models' answers:

# %%
prompts = [json.loads(line) for line in (data / "prompt.eval.jsonl").read_text().splitlines()]
completions = result["completions"]
for i, record in enumerate(prompts[:4]):
    print(f"{record['prompt']!r:28s} reference {record['reference']!r:16s} "
          f"SFT {completions[sft['model']][i]!r:16s} GRPO {completions[grpo['model']][i]!r}")

# %% [markdown]
# ## What the numbers say
#
# An interval that contains 0 means this run cannot tell the two models apart on those prompts.
# A few GRPO iterations after a short SFT move the model a little (the KL above says how far),
# and whether that helps shows only over several seeds: one run is one draw of the training
# noise. The study (`sftrl pipeline --preset study`) repeats SFT and every RL algorithm over 3
# seeds and 400 held-out prompts; the lesson `reading_the_study.py` shows how its findings are
# computed.
