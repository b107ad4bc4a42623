"""Every case of the parity registry, in float32 and float64 (the same table `sftrl parity` prints)."""

import numpy as np
import pytest

from sftrl.parity.cases import CASES
from sftrl.parity.registry import DTYPES, LEVELS, run_case, show
from shared import reference as ref


_RESULTS = {}


def result_of(case, dtype):
    """run_case, once per (case, dtype) in a session: the page test reuses the cases' results."""
    if (case.name, dtype) not in _RESULTS:
        _RESULTS[case.name, dtype] = run_case(case, dtype)
    return _RESULTS[case.name, dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case, dtype):
    result = result_of(case, dtype)
    bound = f"<= {result.tol:g}" if result.min_error is None else f"in [{result.min_error:g}, {result.tol:g}]"
    assert result.passed, (f"parity case {case.name} (level {case.level}, {dtype}): max abs error "
                           f"{result.max_abs:.3e} at {result.worst}, expected {bound}")


def test_registry_covers_every_level_and_documents_differences():
    assert {c.level for c in CASES} == set(LEVELS)
    for case in CASES:
        if case.min_error:
            assert case.note.startswith("Known difference"), case.name
            assert "matched" in case.note or "case `" in case.note, case.name
        for dtype in DTYPES:
            assert case.tol[dtype] <= (1e-4 if dtype == "float32" else 1e-10) or case.min_error, case.name


def test_show_prints_formula_and_sources():
    text = show(next(c for c in CASES if c.name == "attention.causal"))
    assert "softmax(Q K^T / sqrt(d_k)) V" in text
    assert "def scaled_dot_product_attention" in text
    assert text.count("def scaled_dot_product_attention") == 3  # NumPy, PyTorch, TensorFlow


def random_mdp(seed, states=7, actions=3):
    rng = np.random.default_rng(seed)
    P = rng.random((states, actions, states))
    pi = rng.random((states, actions))
    return P / P.sum(-1, keepdims=True), rng.normal(size=P.shape), pi / pi.sum(-1, keepdims=True)


@pytest.mark.parametrize("gamma", [0.5, 0.9, 0.99])
def test_policy_evaluation_iterative_equals_linear_solve(gamma):
    P, R, pi = random_mdp(int(gamma * 100))
    V_solve = ref.policy_evaluation(P, R, pi, gamma, method="solve")
    V_iterate = ref.policy_evaluation(P, R, pi, gamma, method="iterate")
    assert np.max(np.abs(V_solve - V_iterate)) <= 1e-10


def test_policy_evaluation_by_hand():
    # One state, one action, reward 1 forever: V = 1 / (1 - gamma).
    P, R, pi = np.ones((1, 1, 1)), np.ones((1, 1, 1)), np.ones((1, 1))
    assert ref.policy_evaluation(P, R, pi, 0.9)[0] == pytest.approx(10.0, abs=1e-12)


def test_gae_with_lambda_one_is_discounted_return_minus_value():
    rng = np.random.default_rng(0)
    rewards, values = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    mask = np.array([[1] * 6, [1] * 4 + [0] * 2, [1] + [0] * 5], dtype=float)
    gamma = 0.9
    advantages, returns = ref.gae(rewards, values, gamma, 1.0, mask)
    discounted = np.zeros_like(rewards)
    for b in range(3):
        running = 0.0
        for t in reversed(range(6)):
            running = (rewards[b, t] + gamma * running) * mask[b, t]
            discounted[b, t] = running
    np.testing.assert_allclose(advantages, (discounted - values) * mask, atol=1e-12, rtol=0)
    np.testing.assert_allclose(returns, discounted, atol=1e-12, rtol=0)


def test_ppo_clip_loss_by_hand():
    # r = 1.5 with A = +1 is clipped to 1.2 (loss -1.2); r = 0.5 with A = -1 is clipped to 0.8
    # (loss max(0.5, 0.8) = 0.8); r = 1 with A = 2 is unclipped (loss -2).
    logp = np.log(np.array([1.5, 0.5, 1.0]))
    loss, clipfrac, update_kl = ref.ppo_clip_loss(logp, np.zeros(3), np.array([1.0, -1.0, 2.0]), 0.2)
    assert loss == pytest.approx((-1.2 + 0.8 - 2.0) / 3)
    assert clipfrac == pytest.approx(2 / 3)
    assert update_kl == pytest.approx(np.mean([0.5 - np.log(1.5), -0.5 - np.log(0.5), 0.0]))


# ----------------------------------------------------------------------------- masks that are not a right-padded prefix

def test_kl_penalty_rewards_credits_the_last_unmasked_token_of_any_mask():
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 0, 1, 0], [0, 0, 0, 0, 0]], dtype=float)
    scores = np.array([10.0, 20.0, 30.0])
    zeros = np.zeros((3, 5))
    rewards, kl = ref.kl_penalty_rewards(scores, zeros, zeros, 0.1, mask)
    expected = np.zeros((3, 5))
    expected[0, 4] = 10.0  # left padded: the last column, not mask.sum() - 1 = 2
    expected[1, 3] = 20.0  # a hole: the last 1, not mask.sum() - 1 = 2
    # the empty row has no token to credit: its score is dropped, nothing lands in its last column
    np.testing.assert_array_equal(rewards, expected)
    np.testing.assert_array_equal(kl, zeros)


@pytest.mark.parametrize("mask_row", [[0, 0, 1, 1, 1, 1], [1, 1, 0, 0, 1, 1], [1, 0, 1, 0, 1, 0], [0, 1, 1, 0, 1, 1]])
def test_gae_passes_over_masked_positions(mask_row):
    """A masked position is not a step: GAE over a holed or left-padded row equals GAE over the
    row with the masked positions cut out (a hole is not the end of the episode)."""
    rng = np.random.default_rng(len(mask_row) + sum(mask_row))
    rewards, values = rng.normal(size=(1, 6)), rng.normal(size=(1, 6))
    mask = np.array([mask_row], dtype=float)
    advantages, returns = ref.gae(rewards, values, 0.9, 0.8, mask)
    keep = mask[0] > 0
    cut_advantages, cut_returns = ref.gae(rewards[:, keep], values[:, keep], 0.9, 0.8)
    np.testing.assert_allclose(advantages[0, keep], cut_advantages[0], rtol=0, atol=1e-14)
    np.testing.assert_allclose(returns[0, keep], cut_returns[0], rtol=0, atol=1e-14)
    assert np.all(advantages[0, ~keep] == 0) and np.all(returns[0, ~keep] == 0)


def test_gae_of_an_empty_row_is_zero():
    advantages, returns = ref.gae(np.ones((1, 4)), np.ones((1, 4)), 0.9, 0.8, np.zeros((1, 4)))
    assert not advantages.any() and not returns.any()


def test_ppo_update_case_exercises_every_clip_and_a_wrong_variant_fails():
    """`training.ppo_update` is not passed by accident: its rollout makes the ratio clip, the value
    clip and the gradient-norm clip act, the weights move by far more than the tolerance, and the
    torch twin without value clipping (clip_range_value huge) fails the case."""
    import dataclasses

    from sftrl.parity.cases import training
    from sftrl.parity.cases.common import T, tiny_config, torch_sft
    from sftrl.parity.registry import _cast, _compare, _seed
    from torch_impl import ppo as torch_ppo

    inputs = _cast(training.ppo_inputs(np.random.default_rng(_seed("training.ppo_update"))), "float64")
    model = torch_sft(tiny_config("causal"), inputs["state"], "float64", with_value_head=True)
    trainer = torch_ppo.PPOTrainer(model, training.PPO)
    rows = inputs["minibatches"][0][0]
    stats = trainer.train_step(torch_ppo.Minibatch(*(T(inputs[f][rows]) for f in training.MINIBATCH_FIELDS)))
    assert stats["policy/clipfrac"] > 0 and stats["val/clipfrac"] > 0
    assert stats["policy/grad_norm"] > training.PPO.max_grad_norm
    keras_out = training.ppo_update_keras(inputs, "float64")
    torch_out = training.ppo_update_torch(inputs, "float64")
    assert _compare(torch_out, keras_out, "right")[0] <= 1e-10
    moved = max(np.abs(keras_out[f"weight/{n}"] - inputs["state"][n]).max()
                for n in inputs["state"] if f"weight/{n}" in keras_out)
    assert moved > 1e-3
    wrong = dataclasses.replace(training.PPO, clip_range_value=1e9)
    assert _compare(training.ppo_update_torch(inputs, "float64", wrong), keras_out, "wrong")[0] > 1e-6


def test_the_html_page_has_every_case_with_its_measured_errors_and_three_sources():
    """`sftrl parity --html`'s page, parsed: a section per registered case, in order, with the max
    abs error of each dtype as measured, the three source columns, and nothing fetched from outside."""
    from html.parser import HTMLParser

    from sftrl.parity.page import page

    results = [result_of(case, dtype) for case in CASES for dtype in DTYPES]
    text = page(CASES, results)

    class Reader(HTMLParser):
        def __init__(self):
            super().__init__()
            self.sections, self.errors, self.headers, self.where = [], {}, {}, None
            self.external = []

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "section":
                self.sections.append(attrs["id"])
            if tag == "tr" and attrs.get("class") == "result":
                self.where = ("row", attrs["data-dtype"])
            if tag == "td" and attrs.get("class") == "max-abs" and self.where:
                self.where = ("cell", self.where[1])
            if tag == "th":
                self.where = ("header", None)
            self.external += [v for k, v in attrs.items() if k in ("src", "href") and not v.startswith("#")]

        def handle_data(self, data):
            if self.where and self.where[0] == "cell":
                self.errors[self.sections[-1], self.where[1]] = data
                self.where = None
            elif self.where and self.where[0] == "header" and self.sections:
                self.headers.setdefault(self.sections[-1], []).append(data)
                self.where = None

    reader = Reader()
    reader.feed(text)
    assert reader.sections == [c.name for c in CASES]
    for r in results:
        assert reader.errors[r.case, r.dtype] == f"{r.max_abs:.2e}", (r.case, r.dtype)
    for case in CASES:
        assert [h for h in reader.headers[case.name] if h in ("NumPy", "PyTorch", "TensorFlow")] == \
            ["NumPy", "PyTorch", "TensorFlow"], case.name
    assert reader.external == []
    assert "def gae(rewards, values, gamma, lam, mask=None):</td><td>def gae(" in text  # aligned rows


def test_lora_case_fails_with_another_scale():
    """`model.lora` tells the scale alpha / r apart: peft with alpha 16 against Keras with alpha 8
    misses by far more than the tolerance (and the right scale passes)."""
    from sftrl.parity.cases import model
    from sftrl.parity.registry import _cast, _compare, _seed

    inputs = _cast(model.lora_inputs(np.random.default_rng(_seed("model.lora"))), "float64")
    keras_logits = {"logits": model.lora_keras(inputs, "float64")["logits"]}
    right = {"logits": model.lora_torch(inputs, "float64")["logits"]}
    wrong = {"logits": model.lora_torch(inputs, "float64", alpha=2 * model.LORA_ALPHA)["logits"]}
    assert _compare(right, keras_logits, "right")[0] <= 1e-10
    assert _compare(wrong, keras_logits, "wrong")[0] > 1e-3


@pytest.mark.parametrize("case_name", ["loss.grpo_advantages", "loss.dpo_loss", "grad.dpo_loss"])
def test_a_wrong_variant_fails_its_case(case_name, monkeypatch):
    """The cases tell the right math from a plausible slip: GRPO's advantage without the division
    by the group's std, DPO's loss with the reference log-probs dropped. The PyTorch side is swapped
    for the slip and the case, run by the registry as `sftrl parity` runs it, fails in both dtypes
    (the right math passes: test_case)."""
    import torch

    from sftrl.parity.registry import run_case
    from torch_impl import losses as torch_losses

    if case_name == "loss.grpo_advantages":
        def wrong(scores, group_size, eps=ref.GRPO_EPS):
            groups = scores.reshape(-1, group_size)
            return (groups - groups.mean(-1, keepdim=True)).reshape(-1)
        monkeypatch.setattr(torch_losses, "grpo_advantages", wrong)
    else:
        right = torch_losses.dpo_loss
        monkeypatch.setattr(torch_losses, "dpo_loss", lambda c, r, rc, rr, beta: right(c, r, torch.zeros_like(rc),
                                                                                      torch.zeros_like(rr), beta))
    case = next(c for c in CASES if c.name == case_name)
    for dtype in DTYPES:
        result = run_case(case, dtype)
        assert not result.passed and result.max_abs > 100 * result.tol, (dtype, result)
