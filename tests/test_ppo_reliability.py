"""PPO when things go wrong: Ctrl-C, kills, NaNs, bad input; and the precision, device and
distribution settings that must not change the math (beyond what they explain)."""

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, bf16_relative_error_bound, bf16_result, run_cli
from shared.config import PPOConfig
from shared.errors import SftrlError
from shared.io import latest_checkpoint
from shared.rewards import task_partial
from test_ppo import sft_dir  # noqa: F401  (the tiny causal SFT policy: a fixture)
from tf_impl import losses, ppo, rl_run
from tf_impl.convert import to_numpy_state_dict

# Small enough that one `sftrl ppo` process is mostly start-up (TensorFlow import and tracing,
# ~8 s); an iteration then takes ~60 ms.
ITERATIONS = 20
TINY = ["--batch-size", 4, "--minibatch-size", 2, "--ppo-epochs", 1, "--max-new-tokens", 4, "--save-every", 2,
        "--seed", 3, "--quiet", "--no-xla"]  # XLA off: see tests/test_ppo.py


@pytest.fixture(scope="module")
def prompts(tmp_path_factory, builtin_data):
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in builtin_data["prompt.train"]))
    # The barely trained policy earns no task reward yet: all-zero rewards would leave the weights
    # where they are, and every comparison below true for nothing. Longer completions earn more.
    (path.parent / "length_reward.py").write_text(
        "def reward(prompt, completion, reference):\n    return len(completion) / 10\n")
    return path


def ppo_args(sft_dir, prompts, out, *extra, iterations=ITERATIONS):  # noqa: F811
    return ["ppo", "--policy", sft_dir, "--prompts", prompts, "--out", out, "--iterations", iterations, *TINY,
            "--reward", f"{prompts.parent / 'length_reward.py'}:reward", *extra]


def ppo_command(*args, **kwargs):
    return [sys.executable, "-m", "sftrl", *ppo_args(*args, **kwargs)]


def start(command):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(list(map(str, command)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def logged_iterations(out):
    path = out / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def curve(out):
    """The logged metrics without the timings (which no two runs share)."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")} for line in lines]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, sft_dir, prompts):  # noqa: F811
    """The uninterrupted run every interrupted one must reproduce bit for bit."""
    from safetensors.numpy import load_file

    out = tmp_path_factory.mktemp("straight") / "run"
    result = run_cli(*ppo_args(sft_dir, prompts, out))
    assert result.returncode == 0, result.stderr[-2000:]
    name = "bert.encoder.layer.0.attention.self.query.weight"  # PPO moved the weights: there is something to compare
    assert not np.array_equal(load_file(str(out / "model.safetensors"))[name],
                              load_file(str(sft_dir / "model.safetensors"))[name])
    return out


# ----------------------------------------------------------------------------- Ctrl-C and kills

def test_sigint_writes_a_checkpoint_and_resume_finishes_the_same_run(sft_dir, prompts, straight_run,  # noqa: F811
                                                                      tmp_path):
    out = tmp_path / "run"
    process = start(ppo_command(sft_dir, prompts, out))
    while logged_iterations(out) < 2 and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    stopped = logged_iterations(out)
    assert 2 <= stopped < ITERATIONS
    checkpoint = out / "checkpoints" / f"iter-{stopped}"
    assert stderr.strip().splitlines()[-1] == (f"interrupted at iteration {stopped}: checkpoint written to "
                                               f"{checkpoint}; to continue, run the same command with --resume")
    assert (checkpoint / "policy.safetensors").exists() and latest_checkpoint(out) == checkpoint
    assert not (out / "model.safetensors").exists()  # nothing exported

    resumed = run_cli(*ppo_args(sft_dir, prompts, out, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {checkpoint} at iteration {stopped}" in resumed.stdout
    assert (out / "model.safetensors").read_bytes() == (straight_run / "model.safetensors").read_bytes()
    assert curve(out) == curve(straight_run)


def checkpointed_iteration(out):
    ckpt = latest_checkpoint(out)
    return int(ckpt.name.rpartition("-")[2]) if ckpt else 0


@pytest.mark.slow  # ~90 s on 2 cores; the fast suite keeps the SIGINT resume and the exact-resume test
def test_killed_three_times_at_random_moments_the_run_still_ends_bitwise_identical(
        sft_dir, prompts, straight_run, tmp_path):  # noqa: F811
    rng = random.Random(20240607)
    out = tmp_path / "run"
    kills = []  # (iterations logged when killed, newest checkpoint then)
    for _ in range(8):
        done = checkpointed_iteration(out)
        process = start(ppo_command(sft_dir, prompts, out, *(["--resume"] if latest_checkpoint(out) else [])))
        started = time.time_ns()
        if len(kills) < 3:
            # Once this process has logged a random iteration past its checkpoint (in a file it has
            # written itself: newer than its start), wait a random moment more (up to ~3 iterations),
            # then SIGKILL it: anywhere in a rollout, an update, a log line, a checkpoint write.
            # The targets leave room for three kills before the run ends.
            target = rng.randint(done + 1, min(done + 4, ITERATIONS - 4))
            delay = rng.uniform(0.0, 0.15)
            metrics = out / "metrics.jsonl"
            while process.poll() is None and not (metrics.exists() and metrics.stat().st_mtime_ns > started
                                                  and logged_iterations(out) >= target):
                time.sleep(0.005)
            time.sleep(delay)
            if process.poll() is None:
                process.kill()  # no handler runs, nothing is cleaned up
                process.wait()
                kills.append((logged_iterations(out), checkpointed_iteration(out)))
        stdout, stderr = process.communicate(timeout=120)
        if process.returncode == 0:
            break
        assert process.returncode == -signal.SIGKILL, stderr[-2000:]
    else:
        pytest.fail(f"the run did not finish: kills {kills}")
    print("killed at (iterations logged, newest checkpoint):", kills)
    assert len(kills) == 3, kills
    assert (out / "model.safetensors").read_bytes() == (straight_run / "model.safetensors").read_bytes(), kills
    assert curve(out) == curve(straight_run), kills


# ----------------------------------------------------------------------------- NaN

def test_a_nan_stops_the_run_and_names_the_last_good_checkpoint(sft_dir, tokenizer, builtin_data,  # noqa: F811
                                                                 tmp_path, monkeypatch):
    config = PPOConfig(iterations=3, batch_size=4, minibatch_size=2, ppo_epochs=1, max_new_tokens=4,
                       save_every=2, seed=1, xla=False)
    iteration = ppo.PPOTrainer.iteration

    def poisoned(self, records, i):
        if i == 3:  # one weight of one layer goes NaN (as after an overflow)
            kernel = self.policy.bert.encoder.layer[0].output_.dense.kernel
            value = kernel.numpy()
            value[0, 0] = np.nan
            kernel.assign(value)
        return iteration(self, records, i)

    monkeypatch.setattr(ppo.PPOTrainer, "iteration", poisoned)
    policy, reference = rl_run.load_policy_and_reference(sft_dir)
    with pytest.raises(SftrlError) as failure:
        rl_run.train(ppo.PPOTrainer(policy, reference, tokenizer, config, task_partial, log=lambda *a: None),
                     builtin_data["prompt.train"], tmp_path, quiet=True)
    good = tmp_path / "checkpoints" / "iter-2"
    assert str(failure.value) == (f"iteration 3: the PPO loss is nan (minibatch 1); stopped. "
                                  f"Last good checkpoint: {good}")
    assert latest_checkpoint(tmp_path) == good
    assert not (tmp_path / "model.safetensors").exists() and not (tmp_path / "trainer_state.json").exists()
    assert [json.loads(line)["iteration"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    monkeypatch.undo()

    # the last good checkpoint loads (over the NaN weights), and holds finite weights
    assert not all(np.isfinite(w).all() for w in to_numpy_state_dict(policy).values())
    trainer = ppo.PPOTrainer(policy, reference, tokenizer, config, task_partial)
    assert trainer.restore(good) == 2
    assert all(np.isfinite(w).all() for w in to_numpy_state_dict(policy).values())
    # ... but not into a run with other settings, whose result would be neither run
    other = ppo.PPOTrainer(policy, reference, tokenizer, PPOConfig(**{**config.to_dict(), "lr": 3e-4}), task_partial)
    with pytest.raises(SftrlError, match=r"--resume: .*iter-2 was written by a run with --lr 0.0001, this command "
                                         r"has --lr 0.0003; resume with the same settings"):
        other.restore(good)


# ----------------------------------------------------------------------------- device and precision

def test_cli_bf16_run_exports_float32_weights_that_load(sft_dir, prompts, tmp_path):  # noqa: F811
    from safetensors.numpy import load_file
    from torch_impl.checkpoint import load_pretrained

    out = tmp_path / "bf16"
    result = run_cli(*ppo_args(sft_dir, prompts, out, "--precision", "bf16", iterations=2))
    assert result.returncode == 0, result.stderr[-2000:]
    for line in (out / "metrics.jsonl").read_text().splitlines():
        assert all(np.isfinite(v) for v in json.loads(line).values())
    weights = load_file(str(out / "model.safetensors"))
    assert {w.dtype for w in weights.values()} == {np.dtype("float32")}
    exported = load_pretrained(out)  # PyTorch reads it, and the weights moved away from the SFT model's
    sft = load_file(str(sft_dir / "model.safetensors"))
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert np.array_equal(exported.state_dict()[name].numpy(), weights[name])
    assert not np.array_equal(weights[name], sft[name])


def bf16_against_fp32(sft_dir):  # noqa: F811
    """One PPO minibatch of the tiny policy in float32 and in mixed bfloat16 (float32 weights):
    its loss terms, gradient and first Adam update in each. Returns plain numbers (it may run in a
    subprocess: see the test below)."""
    from conftest import SMALL_SIZES
    from shared.tasks import make_builtin_data
    from shared.tokenizer import Tokenizer

    tokenizer = Tokenizer.load(sft_dir)
    records = make_builtin_data(seed=0, sizes=SMALL_SIZES)["prompt.train"][:8]
    config = PPOConfig(batch_size=8, minibatch_size=8, ppo_epochs=1, max_new_tokens=6, lr=1e-3, seed=1,
                       ent_coef=0.01, xla=False)

    def trainer(dtype):
        policy, reference = rl_run.load_policy_and_reference(sft_dir, dtype=dtype)
        return ppo.PPOTrainer(policy, reference, tokenizer, config, task_partial)

    fp32, bf16 = trainer(None), trainer("mixed_bfloat16")
    rollout = fp32.rollout(records, iteration=2)
    mask = tf.constant(rollout.response_mask, tf.float32)
    advantages = losses.whiten(tf.constant(np.random.default_rng(0).normal(size=rollout.logprobs.shape),
                                           tf.float32), mask) * mask
    minibatch = ppo.Minibatch.of_rollout(rollout, advantages, tf.constant(rollout.values) + advantages)

    def gradient_and_update(t):
        with tf.GradientTape() as tape:
            loss, stats = t._loss(minibatch)
        variables = t.policy.trainable_variables
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, variables)]
        before = [v.numpy() for v in variables]
        t._apply(grads, {})  # clip by the global norm, one Adam step: what train_step applies
        flat = lambda arrays: np.concatenate([np.ravel(a) for a in arrays])  # noqa: E731
        return ({k: float(v) for k, v in stats.items()}, flat([g.numpy() for g in grads]),
                flat([v.numpy() - b for v, b in zip(variables, before)]))

    stats32, g32, step32 = gradient_and_update(fp32)
    stats16, g16, step16 = gradient_and_update(bf16)
    m = rollout.response_mask.astype(bool)
    # a checkpoint of one precision is not resumed in the other (the run would be neither)
    with tempfile.TemporaryDirectory() as folder:
        for name, data in fp32.checkpoint_files(0).items():
            (Path(folder) / name).write_bytes(data)
        try:
            bf16.restore(folder)
            resume_error = None
        except SftrlError as e:
            resume_error = str(e)
    return {"compute_dtype": bf16.policy.bert.encoder.layer[0].output_.dense.compute_dtype,
            "variable_dtypes": sorted({w.dtype for w in bf16.policy.weights}),
            "layers": fp32.policy.config.num_hidden_layers, "stats32": stats32, "stats16": stats16,
            "rms_advantage": float(np.sqrt(np.mean(advantages.numpy()[m] ** 2))),
            "rms_logprob": float(np.sqrt(np.mean(rollout.logprobs[m] ** 2))),
            "gradient_relative_l2": float(np.linalg.norm(g16 - g32) / np.linalg.norm(g32)),
            "gradient_relative_l1": float(np.abs(g16 - g32).sum() / np.abs(g32).sum()),
            "decrease_ratio": float((g32 @ step16) / (g32 @ step32)), "resume_error": resume_error}


def test_one_bf16_update_is_close_to_the_fp32_update(sft_dir):  # noqa: F811
    """Every bound follows from bfloat16's arithmetic (`conftest.bf16_relative_error_bound`:
    eps = 3 sqrt(n) 2^-8 for n rounded ops, 6.5 % forward and eps_g = 9.2 % for a gradient of this
    2-layer model), not from one CPU's kernels: natively, on AVX2 and without oneDNN alike.

    The loss is not compared as a whole: here it is 0.007, what is left of a value term of 0.05
    minus an entropy bonus of 0.04 with a policy term of about 0, so its relative error says
    nothing about bfloat16. Each term is compared on its own scale instead.
    """
    result = bf16_result("test_ppo_reliability", "bf16_against_fp32", str(sft_dir),
                         run_here=lambda: bf16_against_fp32(sft_dir))
    print("bf16 vs fp32:", json.dumps(result))
    eps, eps_g = bf16_relative_error_bound(result["layers"]), bf16_relative_error_bound(result["layers"], True)
    s32, s16 = result["stats32"], result["stats16"]
    assert result["compute_dtype"] == "bfloat16" and result["variable_dtypes"] == ["float32"]

    # Gradient: within eps_g of float32's, yet not equal to it -- a float32 computation would be
    # within about sqrt(2n) 2^-24 = 5e-7; 1e-4 is far above that and far below bfloat16's error.
    assert 1e-4 < result["gradient_relative_l2"] <= eps_g, result["gradient_relative_l2"]
    assert result["gradient_relative_l1"] <= eps_g, result["gradient_relative_l1"]
    # Value term: the value head starts at zero, 0 x + 0 = 0 in any precision: exactly equal.
    assert s16["loss/value"] == s32["loss/value"]
    # Entropy: a sum of positive terms -p log p, each within eps of its float32 value.
    assert abs(s16["policy/entropy"] - s32["policy/entropy"]) <= eps * s32["policy/entropy"]
    # Policy term: -mean(A r) with r = exp(delta), delta = log pi_bf16 - log pi_old, and
    # |delta| <= eps |log pi|. So the update KL (policy/approxkl) = mean(r - 1 - delta) ~ mean(delta^2) / 2 is at most
    # (eps rms(log pi))^2 / 2, and by Cauchy-Schwarz |policy term| <= rms(A) rms(r - 1), with
    # rms(r - 1) ~ rms(delta) = sqrt(2 update KL). In float32 the ratio is 1: the term is ~0.
    assert s16["policy/approxkl"] <= (eps * result["rms_logprob"]) ** 2 / 2, s16["policy/approxkl"]
    rms_ratio_change = np.sqrt(2 * s16["policy/approxkl"]) * 1.01  # r - 1 = delta (1 + delta/2 + ...)
    assert abs(s16["loss/policy"] - s32["loss/policy"]) <= result["rms_advantage"] * rms_ratio_change
    assert abs(s32["loss/policy"]) < 1e-6
    # Update: Adam's first step is -lr g / (|g| + eps_adam) ~ -lr sign(g), so the bfloat16 step
    # differs only where a gradient entry flips sign, which needs |g32_i| <= |g16_i - g32_i|. The
    # flipped entries' share of ||g32||_1 is then at most the L1 error (<= eps_g), and the step's
    # first-order decrease of the loss, g32 . step, keeps at least 1 - 2 eps_g of float32's.
    assert result["decrease_ratio"] >= 1 - 2 * eps_g, result["decrease_ratio"]
    assert result["resume_error"].endswith("was written by a run with --precision fp32, this command has "
                                           "--precision bf16; resume with the same settings")


# ----------------------------------------------------------------------------- tf.distribute

MIRRORED_CHECK = textwrap.dedent('''
    """One PPO iteration (two updates) on one device and under MirroredStrategy over two CPUs."""
    import contextlib, json, sys
    import tf_impl  # noqa: F401
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np
    from shared.config import PPOConfig
    from shared.tokenizer import Tokenizer
    from shared.random_streams import generator
    from tf_impl import ppo, rl_run
    from tf_impl.convert import to_numpy_state_dict

    sft_dir, prompts = sys.argv[1], sys.argv[2]
    records = [json.loads(line) for line in open(prompts)][:8]
    tokenizer = Tokenizer.load(sft_dir + "/tokenizer.json")
    config = PPOConfig(batch_size=8, minibatch_size=8, ppo_epochs=2, max_new_tokens=6, lr=1e-3, seed=3,
                       ent_coef=0.01, xla=False)
    reward = lambda prompt, completion, reference=None: len(completion) / 10  # varied: non-zero advantages

    def one_iteration(strategy):
        with strategy.scope() if strategy else contextlib.nullcontext():
            policy, reference = rl_run.load_policy_and_reference(sft_dir)
        trainer = ppo.PPOTrainer(policy, reference, tokenizer, config, reward, strategy=strategy)
        metrics, rollout = trainer.iteration(records, 1)
        return to_numpy_state_dict(policy), trainer.minibatch_stats[0], rollout

    single, single_stats, rollout = one_iteration(None)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    mirrored, mirrored_stats, mirrored_rollout = one_iteration(strategy)
    order = generator("minibatch_order", config.seed, 1, 0).permutation(8)  # the first minibatch's rows
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "same_rollout": bool(np.array_equal(rollout.response, mirrored_rollout.response)),
        "shard_tokens": [int(rollout.response_mask[order[:4]].sum()), int(rollout.response_mask[order[4:]].sum())],
        "grad_norm": [float(single_stats["policy/grad_norm"]), float(mirrored_stats["policy/grad_norm"])],
        "loss": [float(single_stats["loss/total"]), float(mirrored_stats["loss/total"])],
        "max_weight_difference": max(float(np.abs(single[k] - mirrored[k]).max()) for k in single),
    }))
''')


@pytest.mark.slow  # ~45 s on 2 cores
def test_mirrored_strategy_update_equals_the_single_device_update(sft_dir, prompts, tmp_path):  # noqa: F811
    script = tmp_path / "mirrored_check.py"
    script.write_text(MIRRORED_CHECK)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, script, sft_dir, prompts], capture_output=True, text=True, env=env,
                            timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    print("mirrored vs single device:", found)
    assert found["replicas"] == 2 and found["same_rollout"]
    # The shards hold different numbers of response tokens, so averaging the replicas' means
    # (instead of dividing by the global count) would be caught: it moves weights by ~4e-3 here.
    assert found["shard_tokens"][0] != found["shard_tokens"][1], found
    assert found["grad_norm"][0] > 0.1, found  # a real update, not a zero gradient
    assert found["grad_norm"][1] == pytest.approx(found["grad_norm"][0], rel=1e-5)
    assert found["loss"][1] == pytest.approx(found["loss"][0], rel=1e-5, abs=1e-7)
    assert found["max_weight_difference"] <= 1e-5, found


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two worker processes at once: ~15 s on 2 cores
def test_cli_multi_worker_run_matches_the_single_device_run(sft_dir, prompts, straight_run, tmp_path):  # noqa: F811
    from safetensors.numpy import load_file

    out = tmp_path / "run"
    cluster = {"worker": [f"localhost:{free_port()}", f"localhost:{free_port()}"]}
    workers = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CONFIG": tf_config}
        workers.append(subprocess.Popen(list(map(str, ppo_command(sft_dir, prompts, out, "--distribute",
                                                                  "multi-worker"))),
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    results = [w.communicate(timeout=300) for w in workers]
    for worker, (stdout, stderr) in zip(workers, results):
        assert worker.returncode == 0, stderr[-3000:]
    assert "policy written to" in results[0][0] and results[1][0] == ""  # only the chief (worker 0) writes
    # two replicas, one per worker, each half of every minibatch: the single-device numbers
    single, distributed = load_file(str(straight_run / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert max(float(np.abs(single[k] - distributed[k]).max()) for k in single) <= 1e-5
    assert [line["iteration"] for line in curve(out)] == list(range(1, ITERATIONS + 1))


# ----------------------------------------------------------------------------- bad input

def test_user_reward_file(tmp_path):
    from sftrl.commands.common import load_user_reward

    rewards = tmp_path / "my_rewards.py"
    rewards.write_text("def words(prompt, completion, reference):\n    return len(completion.split())\n\n"
                       "def broken(prompt, completion, reference):\n    return 1 / 0\n\n"
                       "def text(prompt, completion, reference):\n    return 'good'\n")
    assert load_user_reward(f"{rewards}:words")("p", "a b c", None) == 3
    with pytest.raises(ValueError, match=rf"^{rewards}:5: ZeroDivisionError: division by zero$"):
        load_user_reward(f"{rewards}:broken")("p", "c", None)
    with pytest.raises(ValueError, match=r"text returned 'good', not a number"):
        load_user_reward(f"{rewards}:text")("p", "c", None)
    with pytest.raises(SftrlError, match=rf"^--reward {rewards}:nope: {rewards} has no function 'nope'$"):
        load_user_reward(f"{rewards}:nope")
    missing = tmp_path / "missing.py"
    with pytest.raises(SftrlError, match=rf"^--reward {missing}:f: no such file {missing}$"):
        load_user_reward(f"{missing}:f")
    (tmp_path / "bad.py").write_text("def f(:\n")
    with pytest.raises(SftrlError, match=r"cannot load .*bad.py:1 \(SyntaxError"):
        load_user_reward(f"{tmp_path / 'bad.py'}:f")


FLAG_ERRORS = textwrap.dedent('''
    """Each argv through sftrl's entry point in one process (one TensorFlow import for all)."""
    import contextlib, io, json, sys
    from sftrl.cli import main

    results = []
    for argv in json.loads(sys.argv[1]):
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            code = main(argv)
        results.append([code, stderr.getvalue()])
    print(json.dumps(results))
''')


def test_cli_bad_input_is_one_error_line_naming_the_flag_or_the_line(sft_dir, prompts, builtin_data,  # noqa: F811
                                                                      tmp_path):
    out = tmp_path / "o"
    base = ["ppo", "--policy", str(sft_dir), "--prompts", str(prompts), "--out", str(out), "--no-xla"]
    nan_reward = tmp_path / "nan_reward.py"
    nan_reward.write_text("def reward(prompt, completion, reference):\n    return float('nan')\n")
    too_long = tmp_path / "long.jsonl"  # 48 positions; line 3 (after a blank line): 62 tokens + [CLS], [SEP]
    too_long.write_text(json.dumps(builtin_data["prompt.train"][0]) + "\n\n"
                        + json.dumps({"prompt": "copy: " + " ".join(["a"] * 60)}) + "\n")
    cases = [(["--resume"], f"error: --resume: no checkpoint in {out / 'checkpoints'} to resume from"),
             (["--lr", "0"], "error: --lr: must be in (0.0, inf], got 0.0"),
             (["--lr", "-1"], "error: --lr: must be in (0.0, inf], got -1.0"),
             (["--batch-size", "0"], "error: --batch-size: must be >= 1, got 0"),
             (["--iterations", "0"], "error: --iterations: must be >= 1, got 0"),
             (["--reward", "nope"], "error: --reward: unknown reward 'nope'; choose from task, task-exact, bleu, or "
                                    "model:DIR for a trained reward model"),
             (["--reward", "rewards.py"], "error: --reward rewards.py: name the function too, as FILE.py:FUNCTION"),
             (["--reward", f"{tmp_path}/none.py:f"], f"error: --reward {tmp_path}/none.py:f: no such file"),
             (["--distribute", "multi-worker"], "error: --distribute multi-worker: set TF_CONFIG to the cluster"),
             (["--prompts", str(too_long), "--max-new-tokens", "4"],
              f"error: --prompts {too_long}:3: the prompt is 64 tokens ([CLS] and [SEP] included) and "
              "--max-new-tokens is 4: 68 > 48, the policy's context (max_position_embeddings); shorten the prompt "
              "or lower --max-new-tokens"),
             (["--eval-prompts", str(too_long), "--max-new-tokens", "4"], f"error: --eval-prompts {too_long}:3: "),
             # a real (tiny) run whose reward is NaN: it stops at the first rollout
             (["--reward", f"{nan_reward}:reward", *map(str, TINY)],
              "error: reward: the reward function returned nan for prompt ")]
    if not tf.config.list_physical_devices("GPU"):
        cases.append((["--device", "cuda"], "error: --device cuda: TensorFlow sees no GPU here"))
    script = tmp_path / "flags.py"
    script.write_text(FLAG_ERRORS)
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    result = subprocess.run([sys.executable, script, json.dumps([base + extra for extra, _ in cases])],
                            capture_output=True, text=True, env={**env, "PYTHONPATH": str(REPO)}, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    for (extra, message), (code, stderr) in zip(cases, json.loads(result.stdout.strip().splitlines()[-1])):
        assert code == 2, (extra, stderr)
        assert len(stderr.strip().splitlines()) == 1 and stderr.startswith(message), (extra, stderr)
    # nothing was exported or checkpointed
    assert not (out / "model.safetensors").exists() and not (out / "trainer_state.json").exists()
    assert latest_checkpoint(out) is None
