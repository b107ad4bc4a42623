"""No lost work in `sftrl sft`: SIGKILL at random moments then --resume, Ctrl-C, NaN/Inf, a full
disk, and several processes (torchrun/DDP) ending where one process ends."""

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from conftest import REPO, bf16_relative_error_bound, run_cli
from shared.config import ModelConfig, SFTConfig
from shared.errors import SftrlError
from shared.io import latest_checkpoint, truncate_jsonl, write_checkpoint
from torch_impl.model import SFTModel
from torch_impl.data import encode_records
from torch_impl.sft import train

STEPS = 240


@pytest.fixture(scope="module")
def run_inputs(tmp_path_factory, builtin_data, tokenizer):
    """Data files, a tokenizer and a tiny model config for `sftrl sft` in a subprocess."""
    root = tmp_path_factory.mktemp("sft_inputs")
    for name in ("sft.train", "sft.eval"):
        with open(root / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in builtin_data[name])
    tokenizer.save(root / "tokenizer.json")
    ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_id,
                attention_type="causal").to_json_file(root / "config.json")
    ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=64, pad_token_id=tokenizer.pad_id,
                attention_type="causal", hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0).to_json_file(root / "config_nodropout.json")
    return root


def sft_args(inputs, out, steps=STEPS, config="config.json", *extra):
    return ["sft", "--data", inputs / "sft.train.jsonl", "--eval-data", inputs / "sft.eval.jsonl",
            "--tokenizer", inputs / "tokenizer.json", "--model-config", inputs / config, "--out", out,
            "--steps", str(steps), "--batch-size", "8", "--lr", "3e-3", "--warmup-steps", "10",
            "--save-every", "20", "--eval-every", "40", "--max-length", "48", "--seed", "5", "--quiet", *extra]


def start_cli(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "sftrl", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def logged_steps(out) -> int:
    path = out / "metrics.jsonl"
    return path.read_text().count('"train/loss"') if path.exists() else 0


def wait_for_step(proc, out, step, timeout=120):
    deadline = time.monotonic() + timeout
    while logged_steps(out) < step:
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture(scope="module")
def straight(run_inputs, tmp_path_factory):
    """The uninterrupted run the interrupted ones must reproduce bit for bit."""
    out = tmp_path_factory.mktemp("straight") / "run"
    result = run_cli(*sft_args(run_inputs, out), timeout=300)
    assert result.returncode == 0, result.stderr
    return out


def test_sigkill_at_random_moments_then_resume_is_bitwise_identical(run_inputs, straight, tmp_path):

    out, rng, kills = tmp_path / "killed", random.Random(2026), []
    for target in sorted(rng.sample(range(1, STEPS), 3)):
        resume = ["--resume"] if latest_checkpoint(out) is not None else []
        proc = start_cli(*sft_args(run_inputs, out), *resume)
        reached = wait_for_step(proc, out, target)
        time.sleep(rng.uniform(0, 0.05))  # anywhere: mid-step, mid-checkpoint, mid-log line
        proc.kill()
        proc.wait()
        assert reached, proc.stderr.read()
        kills.append((target, logged_steps(out)))
        ckpt = latest_checkpoint(out)
        if ckpt is not None:  # whatever is visible is complete and loads
            for name in ("model.safetensors", "optimizer.safetensors", "rng.safetensors"):
                load_file(str(ckpt / name))
        assert not (out / "trainer_state.json").exists()  # nothing claims to be finished
    resume = ["--resume"] if latest_checkpoint(out) is not None else []
    final = run_cli(*sft_args(run_inputs, out), *resume, timeout=300)
    assert final.returncode == 0, final.stderr
    print("kills (target step, logged steps at kill):", kills)
    assert (out / "model.safetensors").read_bytes() == (straight / "model.safetensors").read_bytes(), kills
    losses = lambda p: [json.loads(l)["train/loss"] for l in (p / "metrics.jsonl").read_text().splitlines()
                        if "train/loss" in l]
    assert losses(out) == losses(straight)  # the log, too, is the uninterrupted one


def test_ctrl_c_writes_a_checkpoint_and_says_how_to_resume(run_inputs, straight, tmp_path):
    out = tmp_path / "run"
    proc = start_cli(*sft_args(run_inputs, out))
    assert wait_for_step(proc, out, 30), proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    step = logged_steps(out)
    assert step < STEPS
    assert stderr.strip().splitlines()[-1] == (
        f"interrupted at step {step}: checkpoint written to {out / 'checkpoints' / f'step-{step}'}; "
        "to continue, run the same command with --resume")
    assert latest_checkpoint(out).name == f"step-{step}"
    assert not (out / "model.safetensors").exists()

    resumed = run_cli(*sft_args(run_inputs, out), "--resume", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "model.safetensors").read_bytes() == (straight / "model.safetensors").read_bytes()


# ----------------------------------------------------------------------------- NaN / Inf

@pytest.fixture(scope="module")
def examples(builtin_data, tokenizer):
    return encode_records(builtin_data["sft.train"], "sft", tokenizer, "clm", 48)[0]


def tiny_model(tokenizer):
    torch.manual_seed(0)
    return SFTModel(ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                                pad_token_id=tokenizer.pad_id, attention_type="causal"))


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_nan_or_inf_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tokenizer, examples, tmp_path,
                                                                            where):
    model = tiny_model(tokenizer)
    calls = {"n": 0}
    if where == "loss":  # the 13th forward pass returns NaN scores
        original = model.cls.forward

        def poisoned(hidden_states):
            calls["n"] += 1
            scores = original(hidden_states)
            return scores * float("nan") if calls["n"] == 13 else scores
        model.cls.forward = poisoned
    else:  # the 13th backward pass gives the word embeddings an infinite gradient
        def poisoned(grad):
            calls["n"] += 1
            return grad * float("inf") if calls["n"] == 13 else grad
        model.bert.embeddings.word_embeddings.weight.register_hook(poisoned)
    config = SFTConfig(steps=30, batch_size=4, save_every=5)
    with pytest.raises(SftrlError) as error:
        train(model, tokenizer, examples[:20], [], config, tmp_path, quiet=True, log=lambda *a: None)
    problem = "the loss is nan" if where == "loss" else "the gradient norm is inf"
    assert str(error.value) == (f"step 13: {problem}; stopped, nothing exported. Last good checkpoint: "
                                f"{tmp_path / 'checkpoints' / 'step-10'}")
    assert latest_checkpoint(tmp_path).name == "step-10"
    weights = load_file(str(tmp_path / "checkpoints" / "step-10" / "model.safetensors"))
    assert all(np.isfinite(w).all() for w in weights.values())
    assert not (tmp_path / "model.safetensors").exists() and not (tmp_path / "trainer_state.json").exists()
    assert sum(1 for _ in open(tmp_path / "metrics.jsonl")) == 12  # steps 1..12 were logged, not 13


# ----------------------------------------------------------------------------- checkpoint files

def test_a_failure_while_writing_a_checkpoint_leaves_the_previous_one_latest(tmp_path, monkeypatch):
    root = tmp_path / "checkpoints"
    files = {"model.safetensors": b"m" * 10, "trainer_state.json": b"{}"}
    write_checkpoint(root / "step-5", files, keep=2)
    import shared.io

    written = []
    original = shared.io.atomic_write_bytes

    def fail_on_second(path, data):
        written.append(path.name)
        if len(written) == 2:
            raise SftrlError(f"{path}: cannot write (No space left on device)")
        original(path, data)
    monkeypatch.setattr(shared.io, "atomic_write_bytes", fail_on_second)
    with pytest.raises(SftrlError, match="No space left on device"):
        write_checkpoint(root / "step-10", files, keep=2)
    assert latest_checkpoint(tmp_path) == root / "step-5"
    assert not (root / "step-10").exists()
    monkeypatch.undo()
    # a kill between renaming step-10 into place and rewriting `latest`: the newest complete folder wins
    write_checkpoint(root / "step-10", files, keep=2)
    (root / "latest").write_text("step-5\n")
    assert latest_checkpoint(tmp_path) == root / "step-10"
    # iteration folders (PPO) are pruned to `keep` too
    for i in (1, 2, 3):
        write_checkpoint(root / f"iter-{i}", files, keep=2)
    assert sorted(p.name for p in root.glob("iter-*")) == ["iter-2", "iter-3"]


def test_a_log_line_cut_by_a_kill_is_dropped_on_resume(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "train/loss": 2.0}\n{"step": 2, "train/loss": 1.5}\n{"step": 3, "train/lo')
    truncate_jsonl(log, "step", 2)
    assert log.read_text() == '{"step": 1, "train/loss": 2.0}\n{"step": 2, "train/loss": 1.5}\n'


def test_full_disk_is_one_error_line_and_nothing_looks_complete(run_inputs, tmp_path):
    """RLIMIT_FSIZE makes every write past 40 kB fail with EFBIG, as a full disk fails with ENOSPC."""
    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "sftrl", *map(str, sft_args(run_inputs, out, 30))],
                            capture_output=True, text=True, env=env, preexec_fn=limit_file_size, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "cannot write (File too large)" in lines[0]
    assert latest_checkpoint(out) is None
    assert not (out / "model.safetensors").exists() and not (out / "trainer_state.json").exists()
    assert not list((out / "checkpoints").glob(".*.tmp/*.tmp"))  # no temporary file left behind


def test_unwritable_output_directory_is_one_error_line(run_inputs, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_cli(*sft_args(run_inputs, blocker / "run", 5))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --out {blocker / 'run'}: cannot create the run directory (Not a directory)"]


# ----------------------------------------------------------------------------- scale and precision

def test_torchrun_two_processes_end_with_the_single_process_weights(run_inputs, tmp_path):
    """DDP on CPU (gloo): each process takes half of every global batch of 8; without dropout the
    weights after 20 steps equal one process's within 1e-5, and only rank 0 writes."""
    args = sft_args(run_inputs, tmp_path / "ddp", 20, "config_nodropout.json")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "sftrl"]
    ddp = subprocess.run(torchrun + [str(a) for a in args], capture_output=True, text=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = run_cli(*sft_args(run_inputs, tmp_path / "single", 20, "config_nodropout.json"), timeout=300)
    assert single.returncode == 0, single.stderr
    a, b = load_file(str(tmp_path / "ddp" / "model.safetensors")), load_file(str(tmp_path / "single" / "model.safetensors"))
    assert set(a) == set(b)
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    print("worst DDP difference", worst)
    assert worst < 1e-5, worst
    assert ddp.stdout.count("done: 20 steps") == 1  # rank 0 reports, rank 1 is silent
    logged = [json.loads(l) for l in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "train/loss" in r] == list(range(1, 21))  # one writer
    single_log = [json.loads(l) for l in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([r["train/loss"] for r in logged if "train/loss" in r],
                               [r["train/loss"] for r in single_log if "train/loss" in r], rtol=1e-5)
    state = json.loads((tmp_path / "ddp" / "trainer_state.json").read_text())
    assert state["processes"] == 2


def test_bf16_mixed_precision_trains_with_float32_weights(run_inputs, tmp_path):
    result = run_cli(*sft_args(run_inputs, tmp_path / "bf16", 40), "--precision", "bf16", timeout=300)
    assert result.returncode == 0, result.stderr
    fp32 = run_cli(*sft_args(run_inputs, tmp_path / "fp32", 40), timeout=300)
    weights = load_file(str(tmp_path / "bf16" / "model.safetensors"))
    assert {w.dtype for w in weights.values()} == {np.dtype("float32")}
    loss = lambda p: [json.loads(l)["train/loss"] for l in (p / "metrics.jsonl").read_text().splitlines()
                      if "train/loss" in l]
    bf16, full = loss(tmp_path / "bf16"), loss(tmp_path / "fp32")
    assert bf16 != full                                   # the matmuls really ran in bfloat16
    # same start: the first loss (before any update) within bfloat16's error bound of float32's
    assert abs(bf16[0] - full[0]) <= bf16_relative_error_bound(num_layers=2) * full[0], (bf16[0], full[0])
    assert np.mean(bf16[-10:]) < bf16[0] - 1.0            # and it learns
    assert state_of(tmp_path / "bf16")["precision"] == "bf16"


def state_of(out):
    return json.loads((out / "trainer_state.json").read_text())


def test_device_cuda_without_a_gpu_is_one_error_line(run_inputs, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = run_cli(*sft_args(run_inputs, tmp_path / "run", 5), "--device", "cuda")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --device cuda: no CUDA device is available here"]


def test_tensorboard_drops_what_a_killed_run_logged_after_its_checkpoint(tmp_path):
    """Killed at step 15 with a checkpoint at 10: the resumed run's writer purges steps >= 11
    (whether it opens a new event file or, within the same second, appends to the old one)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from shared.tensorboard import SummaryWriter

    first = SummaryWriter(tmp_path)
    for step in range(1, 16):
        first.add_scalar("train/loss", 100.0 + step, step)
    first.close()
    time.sleep(1.1)  # another file name (they carry the second)
    second = SummaryWriter(tmp_path, purge_step=11)
    for step in range(11, 21):
        second.add_scalar("train/loss", float(step), step)
    second.close()
    accumulator = EventAccumulator(str(tmp_path))
    accumulator.Reload()
    values = [(e.step, e.value) for e in accumulator.Scalars("train/loss")]
    assert values == [(s, 100.0 + s) for s in range(1, 11)] + [(s, float(s)) for s in range(11, 21)]
