"""RL in TensorFlow: the env, rollouts, the PPO update, KL control, resume and export."""

import json

import numpy as np
import pytest
import tensorflow as tf
import torch
from gymnasium.utils.env_checker import check_env

from conftest import run_cli, train_causal_sft
from shared.config import PPOConfig, RewardModelConfig
from shared.generation import gumbel_noise
from shared.rewards import task_partial
from tf_impl import losses
from shared.random_streams import generator
from tf_impl import ppo, rl_run
from tf_impl.env import TextGenEnv
from tf_impl.model import PolicyModel
from tf_impl.reward_model import init_from_sft, pairwise_accuracy, train_reward_model
from torch_impl.checkpoint import load_pretrained

NEW = 6


@pytest.fixture(scope="module")
def sft_dir(tmp_path_factory, builtin_data, tokenizer):
    """A tiny causal SFT model, briefly trained on the built-in tasks."""
    return train_causal_sft(tmp_path_factory.mktemp("sft"), tokenizer, builtin_data["sft.train"], 32, steps=60)


@pytest.fixture()
def trainer(sft_dir, tokenizer):
    policy, reference = rl_run.load_policy_and_reference(sft_dir)
    # XLA off in the tests' short runs: a compile (about 10 s per traced step on 2 cores) outweighs a few
    # iterations; XLA's numerics are checked by the parity case training.ppo_update and test_generate.py
    config = PPOConfig(batch_size=8, minibatch_size=4, ppo_epochs=2, max_new_tokens=NEW, lr=1e-3, seed=1, xla=False)
    return ppo.PPOTrainer(policy, reference, tokenizer, config, task_partial, log=lambda *a: None)


def test_env_passes_gymnasium_checker(builtin_data, tokenizer):
    env = TextGenEnv(builtin_data["prompt.eval"], tokenizer, max_length=24, reward_fn=task_partial)
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=0, options={"index": 0})
    assert obs.shape == (24,) and obs[0] == tokenizer.cls_id and obs[info["length"] - 1] == tokenizer.sep_id
    # Complete the prompt by hand with the right answer: the episode ends at [SEP] with reward 1.
    answer = tokenizer.encode(builtin_data["prompt.eval"][0]["reference"], add_special_tokens=False)
    for token in answer:
        _, reward, terminated, truncated, _ = env.step(token)
        assert reward == 0.0 and not terminated and not truncated
    _, reward, terminated, _, _ = env.step(tokenizer.sep_id)
    assert terminated and reward == 1.0


def test_batched_rollout_equals_the_env_loop(trainer, builtin_data, tokenizer):
    records = builtin_data["prompt.eval"][:8]
    rollout = trainer.rollout(records, iteration=3)
    env = TextGenEnv(records, tokenizer, max_length=64, reward_fn=task_partial)
    policy = trainer.policy
    for i in range(len(records)):
        obs, info = env.reset(options={"index": i})
        noise = gumbel_noise(generator("rollout_noise", trainer.config.seed, 3, i), (NEW, tokenizer.vocab_size))
        tokens = []
        for t in range(NEW):
            ids = tf.constant([env.ids], tf.int32)
            logits = policy(ids)[0, -1] / trainer.config.temperature
            action = int(tf.argmax(logits + noise[t]))
            tokens.append(action)
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
        n = len(tokens)
        assert tokens == rollout.response[i, :n].tolist(), f"prompt {i}"
        assert rollout.response_mask[i].sum() == n
        assert env.completion() == rollout.completions[i]


def test_first_minibatch_has_zero_kl_and_unit_ratio(trainer, builtin_data):
    records = builtin_data["prompt.train"][:8]
    metrics, rollout = trainer.iteration(records, iteration=1)
    np.testing.assert_allclose(rollout.logprobs, rollout.ref_logprobs, atol=1e-6)  # policy == reference
    assert abs(metrics["objective/kl"]) < 1e-5
    first = trainer.minibatch_stats[0]
    assert abs(float(first["policy/ratio_mean"]) - 1.0) < 1e-5
    assert abs(float(first["policy/approxkl"])) < 1e-6
    assert float(first["policy/clipfrac"]) == 0.0
    # Each logged statistic is the mean over all 4 minibatches (2 epochs of 8 / 4), entropy included.
    stats = trainer.minibatch_stats
    assert len(stats) == 4
    for key, name in (("objective/entropy", "policy/entropy"), ("policy/approxkl", "policy/approxkl"),
                      ("policy/clipfrac", "policy/clipfrac"), ("loss/policy", "loss/policy"),
                      ("loss/value", "loss/value"), ("val/clipfrac", "val/clipfrac")):
        assert metrics[key] == pytest.approx(np.mean([float(s[name]) for s in stats]), rel=1e-12, abs=0), key
    assert metrics["objective/entropy"] != float(first["policy/entropy"])  # not the first minibatch's
    for key in ("objective/scores", "objective/kl_coef", "objective/entropy", "policy/approxkl", "policy/clipfrac",
                "loss/policy", "loss/value", "val/clipfrac", "val/var_explained", "time/rollout", "time/reward",
                "time/update"):
        assert np.isfinite(metrics[key]), key


def test_updates_lower_the_clipped_loss_on_a_fixed_batch(trainer, builtin_data):
    config = trainer.config
    records = builtin_data["prompt.train"][:8]
    rollout = trainer.rollout(records, iteration=2)
    mask = tf.constant(rollout.response_mask, tf.float32)
    # Fixed advantages (a tiny, barely trained policy may score every sample alike, which would
    # make the real ones all zero); whitened, as the trainer does.
    advantages = tf.constant(np.random.default_rng(0).normal(size=rollout.logprobs.shape), tf.float32)
    advantages = losses.whiten(advantages, mask) * mask
    returns = tf.constant(rollout.values) + advantages
    batch = ppo.Minibatch.of_rollout(rollout, advantages, returns)

    def clipped_loss():
        logits, _ = trainer.policy.logits_and_values(batch.ids, batch.mask, batch.position_ids)
        logprobs = losses.categorical_log_prob(ppo.response_slice(logits, NEW) / config.temperature, batch.response)
        return float(losses.ppo_clip_loss(logprobs, batch.old_logprobs, advantages, config.clip_range, mask)[0])

    before = clipped_loss()
    for _ in range(5):
        trainer.train_step(batch, tf.constant(config.kl_coef))
    after = clipped_loss()
    assert abs(before) < 1e-6  # ratio 1: the surrogate is -mean(A), and whitened A has mean 0
    assert after < before - 1e-3


def test_adaptive_kl_controller_moves_towards_the_target():
    controller = ppo.AdaptiveKLController(0.1, target=1.0, horizon=100)
    controller.update(current_kl=3.0, n_steps=10)  # too far from the reference: penalise more
    assert controller.value == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    controller = ppo.AdaptiveKLController(0.1, target=1.0, horizon=100)
    controller.update(current_kl=0.9, n_steps=10)
    assert controller.value == pytest.approx(0.1 * (1 - 0.1 * 10 / 100))
    fixed = ppo.FixedKLController(0.1)
    fixed.update(5.0, 10)
    assert fixed.value == 0.1


def test_resume_is_exact_and_export_loads_in_pytorch(sft_dir, tokenizer, builtin_data, tmp_path):
    config = PPOConfig(iterations=6, batch_size=8, minibatch_size=4, ppo_epochs=2, max_new_tokens=NEW, lr=1e-3,
                       save_every=3, target_kl=0.5, seed=2, xla=False)
    records = builtin_data["prompt.train"]

    def run(out, **kwargs):
        policy, reference = rl_run.load_policy_and_reference(sft_dir)
        trainer = ppo.PPOTrainer(policy, reference, tokenizer, config, task_partial, log=lambda *a: None)
        return rl_run.train(trainer, records, out, quiet=True, **kwargs)

    run(tmp_path / "straight")
    assert run(tmp_path / "resumed", stop_after=4) == {"interrupted_at": 4}
    run(tmp_path / "resumed", resume=True)
    a = (tmp_path / "straight" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "resumed" / "model.safetensors").read_bytes()
    curve = lambda p: [json.loads(l)["objective/scores"] for l in (p / "metrics.jsonl").read_text().splitlines()]
    assert curve(tmp_path / "straight") == curve(tmp_path / "resumed") and len(curve(tmp_path / "straight")) == 6

    # the exported policy is a plain causal model that PyTorch reads, with the same logits
    exported = load_pretrained(tmp_path / "straight")
    policy, _ = rl_run.load_policy_and_reference(tmp_path / "straight")
    ids = np.array([[2, 30, 31, 32, 3, 40]])
    np.testing.assert_allclose(exported(torch.tensor(ids)).detach().numpy(), policy(ids).numpy(), atol=1e-5, rtol=0)
    original = load_pretrained(sft_dir)
    assert not torch.equal(original.state_dict()["bert.encoder.layer.0.attention.self.query.weight"],
                           exported.state_dict()["bert.encoder.layer.0.attention.self.query.weight"])


def test_reward_model_learns_the_preferences(sft_dir, tokenizer, builtin_data, tmp_path):
    import keras
    keras.utils.set_random_seed(0)
    model = init_from_sft(sft_dir)
    pairs = builtin_data["preference.train"]
    before = pairwise_accuracy(model, pairs, tokenizer, 48)
    assert before == 0.0  # zero-initialised head: all ties, no pair won yet
    summary = train_reward_model(model, tokenizer, pairs, builtin_data["preference.eval"],
                                 RewardModelConfig(epochs=15, lr=1e-3, batch_size=8), tmp_path, quiet=True)
    assert summary["train/pairwise_accuracy"] >= 0.8
    assert set(p.name for p in tmp_path.iterdir()) >= {"model.safetensors", "config.json", "tokenizer.json"}


def test_cli_ppo_errors(sft_dir, tmp_path, builtin_data):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in builtin_data["prompt.train"][:8]))
    result = run_cli("ppo", "--policy", sft_dir, "--prompts", prompts, "--out", tmp_path / "o", "--reward", "vibes")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --reward: unknown reward 'vibes'; choose from task, task-exact, bleu, or model:DIR for a trained "
        "reward model"]
    result = run_cli("ppo", "--policy", sft_dir, "--prompts", prompts, "--out", tmp_path / "o", "--minibatch-size",
                     "100")
    assert result.returncode == 2 and "error: --minibatch-size: must be <= batch_size (64), got 100" in result.stderr
    mlm = tmp_path / "mlm"
    mlm.mkdir()
    config = json.loads((sft_dir / "config.json").read_text())
    (mlm / "config.json").write_text(json.dumps({**config, "attention_type": "bidirectional", "is_decoder": False}))
    (mlm / "tokenizer.json").write_bytes((sft_dir / "tokenizer.json").read_bytes())
    (mlm / "model.safetensors").write_bytes((sft_dir / "model.safetensors").read_bytes())
    result = run_cli("ppo", "--policy", mlm, "--prompts", prompts, "--out", tmp_path / "o")
    assert result.returncode == 2 and "cannot generate; train the SFT model with --objective clm" in result.stderr


def test_rewards_by_hand():
    from shared.rewards import bleu, get_reward, score_all, with_length_penalty
    assert get_reward("task")("reverse: a b c", "c b x") == pytest.approx(2 / 3)
    assert get_reward("task-exact")("reverse: a b c", "c b x") == 0.0
    assert bleu("p", "the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    long_penalised = with_length_penalty(get_reward("task"), 0.1, max_words=3)
    assert long_penalised("copy: a b c", "a b c d e") == pytest.approx(3 / 5 - 0.2)
    with pytest.raises(Exception, match="reward: the reward function returned nan"):
        score_all(lambda p, c, r: float("nan"), ["copy: a"], ["a"])
    with pytest.raises(Exception, match="needs a 'reference'"):
        score_all(bleu, ["p"], ["c"])


@pytest.mark.parametrize("multiple", [1, 16])
def test_reward_model_batches_come_from_tf_data(tokenizer, builtin_data, multiple):
    """`preference_batches` is a `tf.data.Dataset` of (chosen ids, mask, rejected ids, mask), in
    the records' order, each side padded to its batch's longest pair side as `collate` pads --
    rounded up to a multiple of 16 tokens for the XLA step (`--xla`), the extra columns masked."""
    from shared.data import collate, encode_sft
    from tf_impl.reward_model import preference_batches

    records = builtin_data["preference.train"][:23]
    batches = preference_batches(tokenizer, records, 64, batch_size=8, pad_to_multiple_of=multiple)
    assert isinstance(batches, tf.data.Dataset)
    batches = list(batches)
    assert [len(b[0]) for b in batches] == [8, 8, 7]
    for k, batch in enumerate(batches):
        chunk = records[8 * k:8 * k + 8]
        for side, (ids, mask) in (("chosen", batch[:2]), ("rejected", batch[2:])):
            encoded = [encode_sft(tokenizer, r["prompt"], r[side], 64)[0] for r in chunk]
            longest = max(map(len, encoded))
            expected = collate(encoded, tokenizer.pad_id, length=-(-longest // multiple) * multiple)
            np.testing.assert_array_equal(ids.numpy(), expected["input_ids"])
            np.testing.assert_array_equal(mask.numpy(), expected["attention_mask"])


@pytest.mark.parametrize("module", ["tf", "torch"])
def test_response_outputs_equal_every_position_then_sliced(module):
    """Sparse prediction for PPO: the heads on the response positions only give what the heads on
    every position give, sliced (float64, relative 1e-12), in both frameworks."""
    from shared.config import ModelConfig
    from torch_impl import ppo as torch_ppo
    from torch_impl.model import SFTModel

    config = ModelConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=32, max_position_embeddings=32, attention_type="causal")
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 40, size=(3, 12))
    mask = np.ones_like(ids)
    mask[0, :3] = 0  # a left-padded prompt
    position_ids = np.maximum(np.cumsum(mask, -1) - 1, 0)
    if module == "tf":
        model = PolicyModel(config, with_value_head=True, dtype="float64")
        model.value_head.dense.kernel.assign(rng.normal(size=(16, 1)))
        dense_logits, dense_values = model.logits_and_values(ids, mask, position_ids)
        logits, values = ppo.response_outputs(model, ids, mask, position_ids, 5)
        slice_ = ppo.response_slice
        kept_dense = ppo.response_outputs(model, ids, mask, position_ids, 5, sparse=False)  # the benchmark's path
        for a, b in zip(kept_dense, (dense_logits, dense_values)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(slice_(b, 5)))
    else:
        model = SFTModel(config, with_value_head=True).double().eval()
        torch.nn.init.normal_(model.value_head.dense.weight)
        args = (torch.tensor(ids), torch.tensor(mask), torch.tensor(position_ids))
        with torch.no_grad():
            dense_logits, dense_values = model.logits_and_values(*args)
            logits, values = torch_ppo.response_outputs(model, *args, 5)
        slice_ = torch_ppo.response_slice
    for sparse, dense in ((logits, dense_logits), (values, dense_values)):
        dense = np.asarray(slice_(dense, 5))
        assert np.asarray(sparse).shape == dense.shape
        assert np.abs(np.asarray(sparse) - dense).max() <= 1e-12 * np.abs(dense).max()
