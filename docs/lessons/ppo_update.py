# %% [markdown]
# # One PPO update by hand
#
# You will follow one PPO iteration on numbers small enough to read: the per-token rewards with
# the KL penalty, the advantages (GAE), the clipped surrogate loss, its gradient worked out by
# hand, one gradient step, and then the clip at work on the second pass, token by token; last,
# the value loss and the whole objective. Every quantity comes from the project's own functions
# in NumPy (`shared/reference.py`), and each is checked against its PyTorch
# (`torch_impl/losses.py`) and TensorFlow (`tf_impl/losses.py`) twin.
#
# Open it as a notebook with `jupytext --to notebook docs/lessons/ppo_update.py`.

# %%
from types import SimpleNamespace

from tf_impl import losses as tf_losses   # first: tf_impl imports TensorFlow without its start-up notes
from torch_impl import losses as torch_losses

import numpy as np
import tensorflow as tf
import torch

from shared import reference
from shared.config import PPOConfig

np.set_printoptions(precision=3, suppress=True)
config = PPOConfig()                      # the defaults of `sftrl rl --algorithm ppo`
print(f"clip range ε = {config.clip_range}, value clip = {config.clip_range_value}, "
      f"γ = {config.gamma}, λ = {config.lam}, β = {config.kl_coef}, c_V = {config.vf_coef}")

# %% [markdown]
# ## A policy small enough to read
#
# The language model's job in PPO is to give logits z_t over the vocabulary at each position of a
# sampled completion; the losses see nothing else. So here the policy *is* a table of logits:
# 2 completions, 4 response positions, a vocabulary of 6 tokens. The second completion stopped
# after 3 tokens, so its 4th position is masked. The frozen SFT model (the reference) has logits
# a little different from the policy's: the policy has already trained for a while.

# %%
B, R, V = 2, 4, 6
rng = np.random.default_rng(3)
logits = rng.normal(size=(B, R, V))                                 # θ: the policy's logits (B, R, V)
ref_logits = logits + 0.3 * rng.normal(size=(B, R, V))              # the SFT model's
response_mask = np.array([[1., 1., 1., 1.],
                          [1., 1., 1., 0.]])                        # (B, R) 1 = a real token
probs = reference.softmax(logits)
response = np.array([[rng.choice(V, p=p) for p in row] for row in probs])  # the sampled tokens (B, R)
old_values = 0.3 * rng.normal(size=(B, R))                          # the critic's V(s_t) at sampling
scores = np.array([1.0, 0.0])                                       # the verifier: first right, second wrong

old_logprobs = reference.categorical_log_prob(logits, response)     # log π_old(a_t | s_t), (B, R)
ref_logprobs = reference.categorical_log_prob(ref_logits, response) # log ref(a_t | s_t)
print("tokens:\n", response)
print("log π_old:\n", old_logprobs * response_mask)

# %% [markdown]
# ## 1. Rewards: the score, minus β times the KL to the SFT model
#
# r_t = −β (log π(a_t) − log ref(a_t)), plus the verifier's score at the last real token. The KL
# term keeps the policy near the SFT model: each token pays for how much likelier the policy made
# it than the SFT model would have.

# %%
rewards, kl = reference.kl_penalty_rewards(scores, old_logprobs, ref_logprobs, config.kl_coef, response_mask)
print("per-token KL (log π − log ref):\n", kl)
print("rewards:\n", rewards)

# %% [markdown]
# ## 2. Advantages: GAE, then whitened
#
# δ_t = r_t + γ V_{t+1} − V_t and A_t = δ_t + γλ A_{t+1}, from the last real token backwards. The
# returns A_t + V_t are the critic's targets. The advantages are then whitened over the rollout's
# tokens (mean 0, variance 1), as `tf_impl/ppo.py` does by default.

# %%
advantages, returns = reference.gae(rewards, old_values, config.gamma, config.lam, response_mask)
advantages = reference.whiten(advantages, response_mask) * response_mask
print("advantages:\n", advantages)
print("returns:\n", returns)

# %% [markdown]
# ## 3. The clipped surrogate at the start of the update
#
# With r_t = π(a_t) / π_old(a_t), PPO minimises
# L = mean_t max(−A_t r_t, −A_t clip(r_t, 1 − ε, 1 + ε)) over the real tokens.
# At the first minibatch the policy *is* π_old: every ratio is 1, no clip is active, and the loss
# is −mean A (0 after whitening).

# %%
loss, clipfrac, update_kl = reference.ppo_clip_loss(old_logprobs, old_logprobs, advantages, config.clip_range,
                                                    response_mask)
print(f"loss = {loss:.3f}, share of tokens clipped = {clipfrac:.2f}")

# %% [markdown]
# ## 4. Its gradient, by hand and by autograd
#
# log π(a_t) = z_t[a_t] − log Σ_v exp z_t[v], so ∂ log π(a_t) / ∂z_t = onehot(a_t) − π_t, and
# ∂r_t / ∂z_t = r_t (onehot(a_t) − π_t). Where the clip is not active, the token's share of the
# loss is −A_t r_t / N (N real tokens), so
#
# ∂L / ∂z_t = −(A_t r_t / N) (onehot(a_t) − π_t);
#
# where the clip is active the term is a constant, and its gradient is 0. At ratio 1 this is
# exactly REINFORCE's gradient. The function below writes that formula in NumPy; PyTorch and
# TensorFlow get the same numbers by differentiating their `ppo_clip_loss`.

# %%
def gradient_by_hand(logits, old_logprobs, advantages, mask, clip_range):
    """∂L^CLIP/∂z (B, R, V): −(A r / N)(onehot(a) − π) on the real, unclipped tokens, else 0."""
    logprobs = reference.categorical_log_prob(logits, response)
    ratio = np.exp(logprobs - old_logprobs)
    clipped = -advantages * np.clip(ratio, 1 - clip_range, 1 + clip_range) > -advantages * ratio
    weight = np.where(clipped, 0.0, -advantages * ratio) * mask / mask.sum()   # (B, R)
    onehot = np.eye(V)[response]                                              # (B, R, V)
    return weight[..., None] * (onehot - reference.softmax(logits))


def gradient_torch(logits, old_logprobs, advantages, mask, clip_range):
    z = torch.tensor(logits, requires_grad=True)
    logprobs = torch_losses.categorical_log_prob(z, torch.from_numpy(response))
    loss, _, _ = torch_losses.ppo_clip_loss(logprobs, torch.from_numpy(old_logprobs),
                                            torch.from_numpy(advantages), clip_range, torch.from_numpy(mask))
    loss.backward()
    return z.grad.numpy()


def gradient_tf(logits, old_logprobs, advantages, mask, clip_range):
    z = tf.Variable(logits)
    with tf.GradientTape() as tape:
        logprobs = tf_losses.categorical_log_prob(z, tf.constant(response))
        loss, _, _ = tf_losses.ppo_clip_loss(logprobs, tf.constant(old_logprobs), tf.constant(advantages),
                                             clip_range, tf.constant(mask))
    return tape.gradient(loss, z).numpy()


def compare_gradients(logits):
    args = (logits, old_logprobs, advantages, response_mask, config.clip_range)
    by_hand = gradient_by_hand(*args)
    for name, autograd in (("PyTorch", gradient_torch), ("TensorFlow", gradient_tf)):
        print(f"gradient by hand vs {name} autograd: max |difference| {np.abs(by_hand - autograd(*args)).max():.1e}")
    return by_hand


grad = compare_gradients(logits)

# %% [markdown]
# ## 5. One gradient step
#
# The trainer takes Adam steps over minibatches; here one plain gradient step, large on purpose,
# so that the ratios move out of [1 − ε, 1 + ε] and the clip has something to do.

# %%
new_logits = logits - 4.0 * grad

# %% [markdown]
# ## 6. The second pass: the clip at work
#
# PPO makes several passes over one rollout (`--ppo-epochs`). On the next pass the policy has
# moved and the ratios are no longer 1. For each real token: the advantage, the ratio, the two
# candidate terms and the one `max` takes.

# %%
logprobs = reference.categorical_log_prob(new_logits, response)
ratio = np.exp(logprobs - old_logprobs)
pg_loss1 = -advantages * ratio
pg_loss2 = -advantages * np.clip(ratio, 1 - config.clip_range, 1 + config.clip_range)
clipped = pg_loss2 > pg_loss1
print(f"{'token':>6s} {'A':>7s} {'ratio':>7s} {'-A r':>7s} {'-A clip(r)':>11s}  taken")
for b, t in zip(*np.nonzero(response_mask)):
    taken = "clipped" if clipped[b, t] else "-A r"
    print(f"({b}, {t}) {advantages[b, t]:7.3f} {ratio[b, t]:7.3f} {pg_loss1[b, t]:7.3f} {pg_loss2[b, t]:11.3f}  "
          f"{taken}")

loss, clipfrac, update_kl = reference.ppo_clip_loss(logprobs, old_logprobs, advantages, config.clip_range,
                                                    response_mask)
n_clipped, n_tokens = int((clipped * response_mask).sum()), int(response_mask.sum())
print(f"loss = {loss:.4f}, clipfrac = {clipfrac:.3f}: clipped tokens: {n_clipped} of {n_tokens}")
print(f"KL(π_old || π) of this update (approxkl) = {update_kl:.4f}")

# %% [markdown]
# Read the table by the sign of A:
#
# * **A > 0** (the token did better than expected): the loss wants r up, but only to 1 + ε.
#   Beyond, −A clip(r) is the larger term, a constant: no more push.
# * **A < 0**: the loss wants r down, but only to 1 − ε.
# * A ratio that moved the *wrong* way (A > 0 with r < 1, or A < 0 with r > 1) is never clipped:
#   the `max` keeps the unclipped term, which is the larger (more pessimistic) one, and its
#   gradient pulls the token back.
#
# One gradient step moves every token the way its advantage asks (each position here has its own
# logits), so the table above has no token of the third kind. In a real model the positions
# share weights and some tokens do move the wrong way. The four cases on single tokens:

# %%
print(f"{'A':>5s} {'ratio':>6s} {'-A r':>6s} {'-A clip(r)':>11s}  taken")
for A, r in ((1.0, 1.5), (1.0, 0.7), (-1.0, 0.7), (-1.0, 1.5)):
    token_loss, token_clipped, _ = reference.ppo_clip_loss(np.log([r]), np.zeros(1), np.array([A]),
                                                           config.clip_range)
    taken = "clipped: no gradient" if token_clipped else "-A r: pushes back" if (A > 0) == (r < 1) else "-A r"
    r_clipped = np.clip(r, 1 - config.clip_range, 1 + config.clip_range)
    print(f"{A:5.1f} {r:6.2f} {-A * r:6.2f} {-A * r_clipped:11.2f}  {taken} (loss {token_loss:.2f})")

# %% [markdown]
# So the gradient of a clipped token is 0, and the hand-written gradient says so:

# %%
grad = compare_gradients(new_logits)
per_token = np.abs(grad).max(-1)                                    # (B, R)
print(f"max |gradient| on clipped tokens: {per_token[clipped & (response_mask > 0)].max(initial=0.0):.1e}")
print(f"max |gradient| on the other real tokens: {per_token[~clipped & (response_mask > 0)].max():.1e}")

# %% [markdown]
# ## 7. The value loss, clipped the same way
#
# The critic is trained towards the returns, 0.5 mean max((V − R)², (V_clip − R)²) with
# V_clip = V_old + clip(V − V_old, −c, c): like the policy, it may not move far from its values at
# sampling time in one iteration. Here the critic's new values have moved by up to ±0.5:

# %%
values = old_values + rng.uniform(-0.5, 0.5, size=(B, R))
v_loss, vf_clipfrac = reference.value_loss(values, old_values, returns, config.clip_range_value, response_mask)
print("V − V_old:\n", (values - old_values) * response_mask)
print(f"value loss = {v_loss:.4f}, share of tokens whose clipped value loss is taken = {vf_clipfrac:.3f}")

# %% [markdown]
# ## 8. The whole objective, in three frameworks
#
# `ppo_objective` is what the trainer minimises: L = L^CLIP + c_V L^V − c_H H. The same rollout
# quantities go to the NumPy, PyTorch and TensorFlow versions of every step above; in float64
# they agree to about 1e-16.

# %%
def run_steps(lib, to_tensor):
    """Steps 1, 2, 6, 7 and the objective with one framework's losses; returns name -> value."""
    t = {name: to_tensor(x) for name, x in dict(
        scores=scores, old_logprobs=old_logprobs, ref_logprobs=ref_logprobs, old_values=old_values,
        response_mask=response_mask, logprobs=logprobs, values=values).items()}
    rewards, _ = lib.kl_penalty_rewards(t["scores"], t["old_logprobs"], t["ref_logprobs"], config.kl_coef,
                                        t["response_mask"])
    advantages, returns = lib.gae(rewards, t["old_values"], config.gamma, config.lam, t["response_mask"])
    advantages = lib.whiten(advantages, t["response_mask"]) * t["response_mask"]
    batch = SimpleNamespace(old_logprobs=t["old_logprobs"], ref_logprobs=t["ref_logprobs"],
                            old_values=t["old_values"], advantages=advantages, returns=returns,
                            response_mask=t["response_mask"])
    entropy = lib.masked_mean(lib.entropy_from_logits(to_tensor(new_logits)), t["response_mask"])
    loss, stats = lib.ppo_objective(t["logprobs"], entropy, t["values"], batch, config, config.kl_coef)
    results = {"rewards": rewards, "advantages": advantages, "returns": returns, "loss/total": loss, **stats}
    return {name: np.asarray(value) for name, value in results.items()}


numpy_results = run_steps(reference, np.asarray)
torch_results = run_steps(torch_losses, torch.from_numpy)
tf_results = run_steps(tf_losses, tf.constant)
largest = 0.0
for name, value in numpy_results.items():
    d_torch = np.abs(value - torch_results[name]).max()
    d_tf = np.abs(value - tf_results[name]).max()
    largest = max(largest, d_torch, d_tf)
    shown = f"{float(value):9.4f}" if value.ndim == 0 else f"{'(B, R)':>9s}"
    print(f"{name:18s} {shown}   vs PyTorch {d_torch:.1e}   vs TensorFlow {d_tf:.1e}")
print(f"largest difference between frameworks (float64): {largest:.1e}")

# %% [markdown]
# ## Next
#
# In the trainer (`tf_impl/ppo.py`) the logits come from the model at every response position
# (`response_outputs`), the tokens and π_old from a sampled rollout, and the step is Adam over
# minibatches with the gradient clipped by its norm; the formulas are these. `sftrl parity --show
# training.ppo_update` checks one such minibatch step of the real model in NumPy, PyTorch and
# TensorFlow, and `docs/guide.md` ("The policy-gradient family") shows how GRPO, RLOO and
# REINFORCE change steps 1 to 3.
