# %% [markdown]
# # Attention in NumPy, PyTorch and TensorFlow, with the same numbers
#
# You will write scaled dot-product attention from scratch in NumPy, with a padding mask and a
# causal mask, and check it against the project's own three implementations
# (`shared/reference.py`, `torch_impl/model.py`, `tf_impl/model.py`) on the same inputs. In
# float64 they agree to the last bits; in float32 they differ by about 1e-7, and you will see
# where that comes from.
#
# Open it as a notebook with `jupytext --to notebook docs/lessons/attention.py`.

# %%
from tf_impl import model as tf_model   # first: tf_impl imports TensorFlow without its start-up notes
from torch_impl import model as torch_model

import numpy as np
import tensorflow as tf
import torch

from shared import reference
from shared.constants import ATTENTION_MASK_FILL
from shared.data import build_attention_mask

np.set_printoptions(precision=3, suppress=True)

# %% [markdown]
# ## The formula, from scratch
#
# Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V. Each query scores every key, the softmax turns a
# row of scores into weights that sum to 1, and the output is the weighted mean of the values.
# A mask says which keys a query may see: a masked score is replaced by a very negative number
# before the softmax, so its weight is exactly 0.

# %%
def attention(q, k, v, mask):
    """softmax(Q K^T / sqrt(d_k)) V; q, k, v (B, H, T, hs), mask (B, 1, T, T), True = may attend."""
    d_k = q.shape[-1]
    scores = q @ k.swapaxes(-1, -2) / np.sqrt(d_k)                  # (B, H, T, T)
    scores = np.where(mask, scores, ATTENTION_MASK_FILL)            # hidden keys: -1e9
    scores = scores - scores.max(-1, keepdims=True)                 # exp never overflows
    weights = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
    return weights @ v, weights                                     # (B, H, T, hs), (B, H, T, T)


# %% [markdown]
# ## The inputs and the mask
#
# Two sequences of 5 tokens, 2 heads of size 8. The second sequence is 3 real tokens and 2
# padding tokens on the right. `shared.data.build_attention_mask` builds the one boolean mask
# all three frameworks use: a key is hidden if it is padding, and (causal) if it comes after the
# query.

# %%
B, H, T, hs = 2, 2, 5, 8
rng = np.random.default_rng(0)
q, k, v = (rng.normal(size=(B, H, T, hs)) for _ in range(3))       # float64
attention_mask = np.array([[1, 1, 1, 1, 1],
                           [1, 1, 1, 0, 0]])                        # (B, T), 1 = real token
mask = build_attention_mask(attention_mask, causal=True)            # (B, 1, T, T)
print(mask[1, 0].astype(int))

# %% [markdown]
# Row i is query i, column j is key j. Query 2 sees keys 0, 1, 2 (causal); the padding keys 3
# and 4 are hidden from every query, so the padding queries 3 and 4 see only the real keys.
# The weights show the same pattern, each row summing to 1:

# %%
out, weights = attention(q, k, v, mask)
print(weights[1, 0])
print("row sums:", weights[1, 0].sum(-1))

# %% [markdown]
# ## The project's three implementations, on the same inputs
#
# `reference.scaled_dot_product_attention` is the NumPy reference every parity case is checked
# against; `torch_model.scaled_dot_product_attention` and `tf_model.scaled_dot_product_attention`
# are the functions the models call. Each takes (B, H, T, hs) and the boolean mask and returns
# (output, weights).

# %%
def three_frameworks(q, k, v, mask):
    """The project's attention output in NumPy, PyTorch and TensorFlow, as NumPy arrays."""
    numpy_out, _ = reference.scaled_dot_product_attention(q, k, v, mask)
    torch_out, _ = torch_model.scaled_dot_product_attention(*map(torch.from_numpy, (q, k, v, mask)))
    tf_out, _ = tf_model.scaled_dot_product_attention(*map(tf.constant, (q, k, v, mask)))
    return {"NumPy (shared.reference)": numpy_out, "PyTorch (torch_impl)": torch_out.numpy(),
            "TensorFlow (tf_impl)": tf_out.numpy()}


def max_abs(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


float64 = three_frameworks(q, k, v, mask)
float32 = three_frameworks(*(x.astype(np.float32) for x in (q, k, v)), mask)

print(f"{'':26s} {'float64':>10s} {'float32':>10s}   (max |difference| from the from-scratch float64 output)")
for name in float64:
    print(f"{name:26s} {max_abs(float64[name], out):10.1e} {max_abs(float32[name], out):10.1e}")
print(f"float64 max |difference|: {max(max_abs(x, out) for x in float64.values()):.1e}")
print(f"float32 max |difference|: {max(max_abs(x, out) for x in float32.values()):.1e}")

# %% [markdown]
# In float64 the four agree to about 1e-16: the same formula, in the same precision, rounded at
# the same places. In float32 each is off by about 1e-7, and the three float32 results also
# differ from one another by that much:

# %%
names = list(float32)
for i, a in enumerate(names):
    for b in names[i + 1:]:
        print(f"float32, {a} vs {b}: {max_abs(float32[a], float32[b]):.1e}")

# %% [markdown]
# ## Where the float32 error comes from
#
# float32 keeps 24 significant bits: every rounding moves a number by up to u = 2⁻²⁴ ≈ 6e-8 of
# itself (float64: 2⁻⁵³ ≈ 1e-16). Three steps carry that rounding to the output:
#
# 1. **The inputs.** Casting q, k, v to float32 already moves each by up to u of itself.
# 2. **The scores.** Each score is a sum of d_k products, rounded at every addition. An
#    absolute error δ in a score becomes a *relative* error of about δ in its softmax weight,
#    because exp(s + δ) = exp(s)·e^δ ≈ exp(s)(1 + δ). So the larger the scores, the larger the
#    error in the weights.
# 3. **The weighted sum.** The output adds T weighted values, rounding again.
#
# The frameworks differ from one another because they add in different orders (blocked and
# vectorised matrix products, their own exp): in exact arithmetic the order does not matter,
# in float32 each order rounds differently. That is why the parity suite's default tolerances
# (`FORWARD_TOL` in `sftrl/parity/registry.py`) are 1e-10 in float64 and 1e-5 in float32.
#
# Step 2 can be seen directly: scale the queries up, so that the scores grow. The float32
# error of the scores grows in proportion, the relative error of the weights with it, and the
# output's error follows.

# %%
print(f"{'scale':>5s} {'max |score|':>12s} {'score error':>12s} {'weight rel. error':>18s} {'output error':>13s}")
visible = np.broadcast_to(mask, (B, H, T, T))                       # the weights that are not 0
for scale in (1, 4, 16):
    inputs64 = (scale * q, k, v)
    inputs32 = tuple(x.astype(np.float32) for x in inputs64)
    scores64, scores32 = (a @ b.swapaxes(-1, -2) / np.sqrt(hs) for a, b, _ in (inputs64, inputs32))
    out64, w64 = reference.scaled_dot_product_attention(*inputs64, mask)
    out32, w32 = reference.scaled_dot_product_attention(*inputs32, mask)
    weight_error = np.max(np.abs(w32 - w64)[visible] / w64[visible])
    print(f"{scale:5d} {np.abs(scores64).max():12.1f} {max_abs(scores32, scores64):12.1e} "
          f"{weight_error:18.1e} {max_abs(out32, out64):13.1e}")

# %% [markdown]
# ## A query with nothing to see
#
# With padding on the *left*, the first query of a padded row is padding and, under the causal
# mask, may only see keys that are all padding: every score of its row is masked. With −∞ as the
# fill value its softmax would be 0/0 = NaN, and a NaN spreads into every later layer. The fill
# is a finite −1e9 (`shared.constants.ATTENTION_MASK_FILL`): such a row gets equal weights on
# every key, a finite number no real token ever reads.

# %%
left_padded = build_attention_mask(np.array([[0, 0, 1, 1, 1]]), causal=True)  # (1, 1, T, T)
_, w = reference.scaled_dot_product_attention(q[:1], k[:1], v[:1], left_padded)
print(w[0, 0, :2])                                                  # the two padding queries
print("any NaN:", bool(np.isnan(w).any()))

# %% [markdown]
# ## Next
#
# `sftrl parity --show attention.causal` prints this case's formula and its three
# implementations side by side; `sftrl parity --level block` checks whole transformer blocks the
# same way.
