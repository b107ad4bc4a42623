"""The policy-gradient family beside PPO (GRPO, RLOO, REINFORCE in TensorFlow) and DPO (PyTorch):
their advantages and losses inside the trainers, their CLI runs, kills and resumes, bad flags,
and their exported models in `sftrl eval` and `transformers`."""

import json
import signal
import sys
import time

import numpy as np
import pytest
import torch

from conftest import run_cli
from shared import reference as ref
from shared.config import PPOConfig
from shared.errors import SftrlError
from shared.io import latest_checkpoint
from shared.rewards import task_partial
from shared.tasks import task_scores
from test_ppo import sft_dir  # noqa: F401  (the tiny causal SFT policy: a fixture)
from test_ppo_reliability import curve, logged_iterations, prompts, start  # noqa: F401  (prompts: a fixture)
from shared.random_streams import generator
from tf_impl import ppo, rl_run
from torch_impl import dpo
from torch_impl.checkpoint import load_pretrained


def length_reward(prompt, completion, reference=None):
    """Scores that differ within a group (a barely trained policy earns no task reward yet)."""
    return len(completion) / 10


def trainer_for(sft_dir, tokenizer, **config):  # noqa: F811
    config = PPOConfig(**{"batch_size": 8, "minibatch_size": 4, "ppo_epochs": 2, "max_new_tokens": 6,
                          "lr": 1e-3, "seed": 1, "xla": False, **config})
    policy, reference = rl_run.load_policy_and_reference(sft_dir, with_value_head=config.spec.critic)
    return ppo.PPOTrainer(policy, reference, tokenizer, config, length_reward, log=lambda *a: None)


# ----------------------------------------------------------------------------- inside the trainer

def test_group_algorithms_sample_group_size_completions_of_each_prompt(builtin_data):
    records = builtin_data["prompt.train"]
    for algorithm, group in (("grpo", 4), ("rloo", 2), ("ppo", 4), ("reinforce", 4)):
        config = PPOConfig(algorithm=algorithm, batch_size=8, minibatch_size=4, group_size=group)
        batch = rl_run.prompts_for(5, records, config)
        assert len(batch) == 8
        per_prompt = config.samples_per_prompt
        assert per_prompt == (group if algorithm in ("grpo", "rloo") else 1)
        groups = [batch[i:i + per_prompt] for i in range(0, 8, per_prompt)]
        assert all(len({r["prompt"] for r in g}) == 1 for g in groups)  # a group is one prompt, in a row
    # PPO's batches: batch_size prompts drawn by the stream prompt_order at (seed, iteration)
    rng = generator("prompt_order", 0, 5)
    assert rl_run.prompts_for(5, records, PPOConfig()) == [records[i] for i in rng.choice(len(records), 64, replace=False)]


@pytest.mark.parametrize("algorithm", ["grpo", "rloo", "reinforce"])
def test_each_algorithms_advantages_loss_and_steps(algorithm, sft_dir, tokenizer, builtin_data):  # noqa: F811
    """Two iterations on the real rollouts. The trainer's advantages are the NumPy reference's:
    GRPO's group-normalised score; RLOO's leave-one-out of R = score - beta sum KL; REINFORCE's R
    minus the moving-average baseline (the first rollout: its own mean), updated after each
    rollout. Every token of a completion gets its advantage. Then the update: GRPO's epochs of
    minibatches, one step for RLOO and REINFORCE; the weights move; each logs its statistics."""
    trainer = trainer_for(sft_dir, tokenizer, algorithm=algorithm, group_size=4, kl_coef=0.1)
    assert trainer.policy.value_head is None  # no critic
    seen = []
    reward, advantages_of = trainer.reward, trainer.advantages  # the phases, watched
    trainer.reward = lambda rollout, records: seen.append([rollout, reward(rollout, records)]) or seen[-1][1]
    trainer.advantages = lambda rollout, rewards: seen[-1].append(advantages_of(rollout, rewards)) or seen[-1][2]
    records = rl_run.prompts_for(1, builtin_data["prompt.train"], trainer.config)
    before = [v.numpy() for v in trainer.policy.trainable_variables]
    baseline = None
    for iteration in (1, 2):
        metrics, _ = trainer.iteration(records, iteration)
        rollout, (rewards, kl), (advantages, returns) = seen[-1]
        scores = np.array([length_reward(None, c) for c in rollout.completions])
        mask = rollout.response_mask
        R = scores - 0.1 * ((rollout.logprobs - rollout.ref_logprobs) * mask).sum(1)
        if algorithm == "grpo":
            expected = ref.grpo_advantages(scores, 4)
        elif algorithm == "rloo":
            expected = ref.rloo_advantages(R, 4)
        else:
            baseline = R.mean() if baseline is None else baseline
            expected = R - baseline
            baseline = 0.9 * baseline + 0.1 * R.mean()
            assert trainer.baseline == pytest.approx(baseline, rel=1e-6)
            assert metrics["objective/baseline"] == pytest.approx(baseline, rel=1e-6)
        np.testing.assert_allclose(advantages.numpy(), expected[:, None] * mask, rtol=1e-5, atol=1e-5)
        assert not np.any(returns.numpy())
        np.testing.assert_allclose(kl.numpy(), (rollout.logprobs - rollout.ref_logprobs) * mask, atol=1e-6)
        steps = {"grpo": 2 * 8 // 4, "rloo": 1, "reinforce": 1}[algorithm]  # epochs x minibatches, or one step
        assert len(trainer.minibatch_stats) == steps
        specific = {"grpo": {"policy/clipfrac", "policy/kl_to_reference"}, "rloo": set(),
                    "reinforce": {"objective/baseline"}}[algorithm]
        assert {"objective/scores", "objective/kl", "objective/entropy", "loss/policy"} | specific <= set(metrics)
        assert "loss/value" not in metrics and all(np.isfinite(v) for v in metrics.values())
        # whatever the training reward (here the length), the verifier's "gold" score of the samples
        gold_exact, gold_partial = task_scores([r["prompt"] for r in records], rollout.completions)
        assert metrics["objective/gold_exact"] == pytest.approx(np.mean(gold_exact), abs=1e-12)
        assert metrics["objective/gold_partial"] == pytest.approx(np.mean(gold_partial), abs=1e-12)
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, trainer.policy.trainable_variables))


def test_reinforce_resumes_its_baseline_with_the_weights(sft_dir, tokenizer, builtin_data, tmp_path):  # noqa: F811
    """REINFORCE carries state beyond the weights and the optimizer: the baseline. A checkpoint
    restores it, so the resumed iteration is the uninterrupted one, bit for bit."""
    records = builtin_data["prompt.train"]
    straight = trainer_for(sft_dir, tokenizer, algorithm="reinforce")
    for iteration in (1, 2):
        straight.iteration(rl_run.prompts_for(iteration, records, straight.config), iteration)
    files = straight.checkpoint_files(2)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    assert json.loads(files["trainer_state.json"])["baseline"] == straight.baseline
    resumed = trainer_for(sft_dir, tokenizer, algorithm="reinforce")
    assert resumed.restore(tmp_path) == 2 and resumed.baseline == straight.baseline
    for trainer in (straight, resumed):
        trainer.iteration(rl_run.prompts_for(3, records, trainer.config), 3)
    assert resumed.baseline == straight.baseline
    for a, b in zip(straight.policy.trainable_variables, resumed.policy.trainable_variables):
        assert np.array_equal(a.numpy(), b.numpy())


# ----------------------------------------------------------------------------- CLI: kills and resumes

TINY = ["--batch-size", 4, "--minibatch-size", 2, "--ppo-epochs", 1, "--max-new-tokens", 4, "--save-every", 2,
        "--seed", 3, "--quiet", "--no-xla"]
ITERATIONS = 10


def rl_args(algorithm, sft_dir, prompts, out, *extra):  # noqa: F811
    return ["rl", "--algorithm", algorithm, "--policy", sft_dir, "--prompts", prompts, "--out", out,
            "--iterations", ITERATIONS, *TINY, "--group-size", 2,
            "--reward", f"{prompts.parent / 'length_reward.py'}:reward", *extra]


def kill_after_a_checkpoint(command, out, log_lines, checkpoints_key):
    """Start `command`, SIGKILL it once it has logged an entry past a checkpoint (mid-run: no
    handler runs, nothing is cleaned up). Returns the number of entries logged at the kill."""
    process = start(command)
    while process.poll() is None and not (latest_checkpoint(out) and log_lines(out) > checkpoints_key(out)):
        time.sleep(0.005)
    assert process.poll() is None, "the run ended before it could be killed"
    process.kill()
    process.wait()
    assert process.returncode == -signal.SIGKILL
    return log_lines(out)


def checkpoint_number(out):
    return int(latest_checkpoint(out).name.rpartition("-")[2])


@pytest.mark.slow  # ~75 s each on 2 cores (three TensorFlow processes); the fast suite resumes REINFORCE's
@pytest.mark.parametrize("algorithm", ["grpo", "rloo", "reinforce"])  # state in-process (test above)
def test_sigkill_then_resume_is_bitwise_for_each_algorithm(algorithm, sft_dir, prompts, tmp_path):  # noqa: F811
    straight = tmp_path / "straight"
    result = run_cli(*rl_args(algorithm, sft_dir, prompts, straight))
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"done: {ITERATIONS} {algorithm.upper()} iterations" in result.stdout
    out = tmp_path / "killed"
    killed_at = kill_after_a_checkpoint([sys.executable, "-m", "sftrl", *rl_args(algorithm, sft_dir, prompts, out)],
                                        out, logged_iterations, checkpoint_number)
    assert 2 < killed_at < ITERATIONS and not (out / "model.safetensors").exists()
    resumed = run_cli(*rl_args(algorithm, sft_dir, prompts, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (out / "model.safetensors").read_bytes() == (straight / "model.safetensors").read_bytes(), killed_at
    assert curve(out) == curve(straight)


def dpo_args(sft_dir, data, out, *extra):  # noqa: F811
    return ["dpo", "--policy", sft_dir, "--data", data / "preference.train.jsonl", "--eval-data",
            data / "preference.eval.jsonl", "--out", out, "--steps", 24, "--batch-size", 8, "--save-every", 4,
            "--eval-every", 8, "--lr", 1e-3, "--quiet", *extra]


@pytest.fixture(scope="module")
def preference_files(tmp_path_factory, builtin_data):
    folder = tmp_path_factory.mktemp("preference")
    for name in ("preference.train", "preference.eval", "prompt.train", "prompt.eval"):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in builtin_data[name]))
    return folder


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory, sft_dir, preference_files):  # noqa: F811
    out = tmp_path_factory.mktemp("dpo") / "run"
    result = run_cli(*dpo_args(sft_dir, preference_files, out))
    assert result.returncode == 0, result.stderr[-2000:]
    return out, result.stdout


def logged_steps(out):
    path = out / "metrics.jsonl"
    return len({json.loads(line)["step"] for line in path.read_text().splitlines()}) if path.exists() else 0


def test_dpo_logs_trls_reward_statistics_and_learns_the_preferences(dpo_run):
    out, stdout = dpo_run
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in lines if "rewards/chosen" in m]
    assert len(train) == 24
    for m in train:
        assert {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"} <= set(m)
        assert m["rewards/margins"] == pytest.approx(m["rewards/chosen"] - m["rewards/rejected"], abs=1e-6)
        assert 0.0 <= m["rewards/accuracies"] <= 1.0
    # Step 1: the policy is the reference (no dropout), so every implicit reward is 0 (up to float32
    # round-off: the reference's log-probs were summed in batches padded to other lengths) and the loss log 2.
    assert abs(train[0]["rewards/chosen"]) < 1e-6 and abs(train[0]["rewards/rejected"]) < 1e-6
    assert train[0]["train/loss"] == pytest.approx(np.log(2.0), abs=1e-6)
    # The training pairs are learnt: the margin grows, the pairs are told apart.
    assert np.mean([m["rewards/margins"] for m in train[-8:]]) > 0.02
    assert np.mean([m["rewards/accuracies"] for m in train[-8:]]) > 0.7
    # The export is the weights of the best held-out loss, and is evaluated as such.
    evals = [m["eval/loss"] for m in lines if "eval/loss" in m]
    assert len(evals) == 3 and lines[-1]["final/loss"] == pytest.approx(min(evals), rel=1e-6)
    assert "DPO steps" in stdout and "held-out pairs:" in stdout


def test_dpo_sigkill_then_resume_is_bitwise(sft_dir, preference_files, dpo_run, tmp_path):  # noqa: F811
    straight, _ = dpo_run
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "sftrl", *dpo_args(sft_dir, preference_files, out)]
    killed_at = kill_after_a_checkpoint(command, out, logged_steps, checkpoint_number)
    assert 4 < killed_at < 24 and not (out / "model.safetensors").exists()
    resumed = run_cli(*dpo_args(sft_dir, preference_files, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (out / "model.safetensors").read_bytes() == (straight / "model.safetensors").read_bytes(), killed_at
    strip = lambda path: [{k: v for k, v in json.loads(line).items() if k != "train/tokens_per_s"}  # noqa: E731
                          for line in (path / "metrics.jsonl").read_text().splitlines()]
    assert strip(out) == strip(straight)


def test_dpo_ctrl_c_writes_a_checkpoint_and_resume_finishes_the_same_run(sft_dir, preference_files,  # noqa: F811
                                                                         dpo_run, tmp_path):
    straight, _ = dpo_run
    out = tmp_path / "run"
    process = start([sys.executable, "-m", "sftrl", *dpo_args(sft_dir, preference_files, out)])
    while logged_steps(out) < 2 and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    stopped = checkpoint_number(out)
    assert 2 <= stopped < 24 and not (out / "model.safetensors").exists()
    assert stderr.strip().splitlines()[-1] == (f"interrupted at step {stopped}: checkpoint written to "
                                               f"{out / 'checkpoints' / f'step-{stopped}'}; to continue, run the "
                                               "same command with --resume")
    resumed = run_cli(*dpo_args(sft_dir, preference_files, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (out / "model.safetensors").read_bytes() == (straight / "model.safetensors").read_bytes()


def test_every_model_is_evaluated_alike_and_loads_in_transformers(sft_dir, dpo_run, preference_files,  # noqa: F811
                                                                  tokenizer, builtin_data, tmp_path):
    """`sftrl eval` takes the SFT, an RL (GRPO, one iteration, exported as `sftrl rl` exports) and
    the DPO model side by side; the DPO export is a `transformers` folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trainer = trainer_for(sft_dir, tokenizer, algorithm="grpo", group_size=2)
    trainer.iteration(rl_run.prompts_for(1, builtin_data["prompt.train"], trainer.config), 1)
    grpo = tmp_path / "grpo"
    rl_run.export_policy(trainer.policy, tokenizer, grpo)
    dpo_dir, _ = dpo_run
    result = run_cli("eval", "--model", sft_dir, "--model", grpo, "--model", dpo_dir, "--prompts",
                     preference_files / "prompt.eval.jsonl", "--out", tmp_path / "eval")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    rows = report["models"]
    assert [row["model"] for row in rows] == [str(sft_dir), str(grpo), str(dpo_dir)]
    for row in rows[1:]:  # each against the first model (SFT): a paired-bootstrap interval, and the KL
        low, high = row["exact_match_difference"]["ci95"]
        kl = row["sequence_kl_to_first"]
        assert low <= row["exact_match_difference"]["mean"] <= high
        assert -1e-6 <= kl["ci95"][0] <= kl["mean"] <= kl["ci95"][1]  # sums of exact per-token KLs: >= 0
    model = AutoModelForCausalLM.from_pretrained(dpo_dir)
    tok = AutoTokenizer.from_pretrained(dpo_dir)
    ids = tok("add: 1 + 2", return_tensors="pt")
    ours = load_pretrained(dpo_dir)
    with torch.no_grad():
        np.testing.assert_allclose(model(**ids).logits.numpy(), ours(ids["input_ids"], ids["attention_mask"]).numpy(),
                                   atol=1e-4)


# ----------------------------------------------------------------------------- DPO pieces

def test_completion_logps_are_the_summed_log_probs_of_the_completion_tokens(sft_dir, tokenizer,  # noqa: F811
                                                                              builtin_data):
    model = load_pretrained(sft_dir)
    pairs, _ = dpo.encode_pairs(builtin_data["preference.train"][:6], tokenizer, 64)
    batch = {k: torch.as_tensor(v) for k, v in dpo.collate_pairs(pairs, tokenizer.pad_id).items()}
    with torch.no_grad():
        got = dpo.completion_logps(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        logp = torch.log_softmax(model(batch["input_ids"], batch["attention_mask"]).double(), -1)  # every position
    for row in range(12):
        labels = batch["labels"][row]
        expected = sum(float(logp[row, t - 1, labels[t]]) for t in range(1, len(labels)) if labels[t] != -100)
        assert float(got[row]) == pytest.approx(expected, rel=1e-5), row


def test_pairs_from_samples_rank_by_the_verifier_and_follow_the_seed(sft_dir, tokenizer, builtin_data):  # noqa: F811
    model = load_pretrained(sft_dir)
    records = builtin_data["prompt.train"][:12]
    pairs, stats = dpo.pairs_from_samples(model, tokenizer, records, 4, task_partial, 6, seed=5)
    assert stats["samples"] == 48 and stats["pairs"] == len(pairs) > 0
    for p in pairs:
        assert p["chosen_score"] > p["rejected_score"]
        assert task_partial(p["prompt"], p["chosen"]) == p["chosen_score"]
        assert task_partial(p["prompt"], p["rejected"]) == p["rejected_score"]
    assert dpo.pairs_from_samples(model, tokenizer, records, 4, task_partial, 6, seed=5)[0] == pairs


def test_dpo_cli_pairs_from_samples(sft_dir, preference_files, tmp_path):  # noqa: F811
    out = tmp_path / "dpo"
    result = run_cli("dpo", "--policy", sft_dir, "--data", preference_files / "prompt.train.jsonl",
                     "--pairs-from-samples", 4, "--out", out, "--steps", 3, "--batch-size", 4, "--quiet",
                     "--eval-prompts", preference_files / "prompt.eval.jsonl")
    assert result.returncode == 0, result.stderr[-2000:]
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["chosen_score"] > p["rejected_score"] for p in pairs)
    assert "pairs from samples:" in result.stdout and "held-out exact_match: SFT" in result.stdout
    assert set(json.loads((out / "eval.json").read_text())) >= {"exact_match", "partial_credit"}


# ----------------------------------------------------------------------------- bad flags

@pytest.mark.parametrize("command, expected", [
    (["rl", "--algorithm", "grpo", "--group-size", "1"], "error: --group-size: must be >= 2 for --algorithm grpo"),
    (["rl", "--algorithm", "rloo", "--group-size", "1"], "error: --group-size: must be >= 2 for --algorithm rloo"),
    (["rl", "--algorithm", "grpo", "--batch-size", "18", "--minibatch-size", "2"],
     "error: --batch-size: must be a multiple of --group-size"),
    (["rl", "--algorithm", "a2c"], "error: argument --algorithm: invalid choice: 'a2c'"),
    (["rl", "--algorithm", "grpo", "--loss-normalisation", "row"], "error: argument --loss-normalisation"),
    (["dpo", "--beta", "0"], "error: --beta: must be in (0.0, inf], got 0"),
    (["dpo", "--pairs-from-samples", "1"], "error: --pairs-from-samples: must be >= 2"),
])
def test_bad_flags_are_one_error_line(command, expected, sft_dir, preference_files, tmp_path):  # noqa: F811
    data = preference_files / ("preference.train.jsonl" if command[0] == "dpo" else "prompt.train.jsonl")
    where = ["--data", data] if command[0] == "dpo" else ["--prompts", data]
    result = run_cli(*command, "--policy", sft_dir, *where, "--out", tmp_path / "out")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
    assert not (tmp_path / "out").exists()


def test_sftrl_ppo_is_sftrl_rl_with_its_default_algorithm():
    from sftrl.cli import build_parser

    args = build_parser().parse_args(["ppo", "--policy", "p", "--prompts", "q", "--out", "o"])
    assert args.algorithm == "ppo" and args.func.__name__ == "cmd_rl"
    with pytest.raises(SftrlError, match="--group-size"):
        from sftrl.commands.rl import build_config
        build_config(build_parser().parse_args(["rl", "--algorithm", "rloo", "--group-size", "1", "--policy", "p",
                                                "--prompts", "q", "--out", "o"]))
