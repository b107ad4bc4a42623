"""Where the Keras train step's time goes, against PyTorch's: the `train` suite's MLM step split
into its parts, at the default size and at the large one (vocabulary 8000), in one process.

Both sides compute every position's logits (PyTorch's dense head, as Keras computes them), so the
work is the same. Per framework, timed interleaved:
  - forward: the loss, no gradient;
  - forward + backward: the loss and every gradient (Keras: one XLA program returning them);
  - optimizer: one AdamW update from given gradients (Keras: XLA-compiled on its own);
  - step: forward, backward and AdamW, as the `train` suite times it (Keras: one XLA program);
  - matmuls alone: the step's linear-layer products -- for each layer the forward (M, K) x (K, N)
    and the backward's two, dX and dW -- in ATen (PyTorch), XLA and TensorFlow's oneDNN kernels.
The ratios say which part costs Keras the difference: the matrix products themselves (the
kernels), the rest of the forward and backward (attention's softmax, LayerNorm, GELU, the loss,
the embedding gradient), or the optimizer.
"""

from __future__ import annotations

import numpy as np


def linear_shapes(s) -> list[tuple[int, int]]:
    """(K, N) of every linear layer of the MLM model: q, k, v and W^O, W_1 and W_2 per block, then the
    head's transform and the vocabulary projection."""
    C, V = s["hidden"], s["vocab"]
    return [(C, C)] * 4 * s["layers"] + [(C, 4 * C), (4 * C, C)] * s["layers"] + [(C, C), (C, V)]


def matmul_operands(s, rng) -> list[tuple[np.ndarray, np.ndarray]]:
    """The step's linear-layer products: per layer Y = X W, dX = dY W^T and dW = X^T dY, M = B T rows."""
    M = s["batch"] * s["seq"]
    pairs = []
    for K, N in linear_shapes(s):
        x, w, dy = (rng.standard_normal(shape).astype("float32") for shape in ((M, K), (K, N), (M, N)))
        pairs += [(x, w), (dy, np.ascontiguousarray(w.T)), (np.ascontiguousarray(x.T), dy)]
    return pairs


def torch_parts(config, batch, pairs, device):
    import torch

    from torch_impl.model import SFTModel

    ids, mask, labels = (torch.as_tensor(a, device=device) for a in batch)
    model = SFTModel(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss = lambda: model(ids, mask, labels, sparse=False)                  # noqa: E731
    operands = [(torch.as_tensor(a, device=device), torch.as_tensor(b, device=device)) for a, b in pairs]

    def forward():
        with torch.no_grad():
            loss()

    def forward_backward():
        model.zero_grad(set_to_none=True)
        loss().backward()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        optimizer.step()

    forward_backward()  # gradients for the optimizer-only part
    return {"forward": forward, "forward + backward": forward_backward, "optimizer": optimizer.step,
            "step": step, "matmuls alone": lambda: [a @ b for a, b in operands]}


def keras_parts(config, batch, pairs):
    import tf_impl  # noqa: F401  (TensorFlow, quietly)
    import keras
    import tensorflow as tf

    from tf_impl import losses
    from tf_impl.model import PolicyModel

    ids, mask, labels = tf.constant(batch[0], tf.int32), tf.constant(batch[1], tf.int32), tf.constant(batch[2])
    model = PolicyModel(config)
    optimizer = keras.optimizers.AdamW(learning_rate=1e-4)
    optimizer.build(model.trainable_variables)
    loss = lambda: losses.cross_entropy(model(ids, mask, training=True), labels)  # noqa: E731

    def gradients():
        with tf.GradientTape() as tape:
            value = loss()
        return value, [tf.convert_to_tensor(g) for g in tape.gradient(value, model.trainable_variables)]

    @tf.function(jit_compile=True)
    def step():
        value, grads = gradients()
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return value

    forward, forward_backward = tf.function(loss, jit_compile=True), tf.function(gradients, jit_compile=True)
    grads = forward_backward()[1]
    apply = tf.function(lambda g: optimizer.apply_gradients(zip(g, model.trainable_variables)), jit_compile=True)
    operands = [(tf.constant(a), tf.constant(b)) for a, b in pairs]
    products = lambda compile_: tf.function(lambda: [tf.matmul(a, b) for a, b in operands],  # noqa: E731
                                            jit_compile=compile_)
    xla_products, onednn_products = products(True), products(False)
    return {"forward": lambda: float(forward()), "forward + backward": lambda: forward_backward()[0].numpy(),
            "optimizer": lambda: apply(grads), "step": lambda: float(step()),
            "matmuls alone": lambda: xla_products()[0].numpy(),
            "matmuls alone, oneDNN (tf.function)": lambda: onednn_products()[0].numpy()}


def suite_profile(s, device):
    import torch

    from benchmarks.steps import mlm_batch, model_config
    from benchmarks.timing import comparison, interleaved, row

    rows, comparisons = [], []
    for size in (s, {**s, **s["large"]}):
        label = f"C {size['hidden']}, V {size['vocab']}"
        config, rng = model_config(size), np.random.default_rng(0)
        batch, pairs = mlm_batch(size, rng), matmul_operands(size, rng)
        sides = {f"pytorch: {part}": fn for part, fn in torch_parts(config, batch, pairs, device).items()}
        sides.update({f"keras, XLA: {part}": fn for part, fn in keras_parts(config, batch, pairs).items()})
        timings = interleaved(sides, size["train_repeat"], size["warmup"],
                              sync=torch.cuda.synchronize if device == "cuda" else None)
        case = (f"MLM train step parts, C {size['hidden']}, L {size['layers']}, V {size['vocab']}, "
                f"batch {size['batch']}, T {size['seq']}")
        rows += [row("profile", case, side, t) for side, t in timings.items()]
        ms = {side: 1e3 * t["median_s"] for side, t in timings.items()}
        for part in ("forward", "forward + backward", "optimizer", "step", "matmuls alone"):
            comparisons.append(comparison("profile", f"{label}: Keras (XLA) / PyTorch {part} time",
                                          ms[f"keras, XLA: {part}"], ms[f"pytorch: {part}"]))
        gap = ms["keras, XLA: forward + backward"] - ms["pytorch: forward + backward"]
        in_matmuls = ms["keras, XLA: matmuls alone"] - ms["pytorch: matmuls alone"]
        comparisons.append({"suite": "profile", "comparison": f"{label}: share of Keras' forward + backward "
                            "deficit in the matmuls alone", "ratio": in_matmuls / gap if gap > 0 else None,
                            "target": None, "met": None,
                            "note": (f"Keras slower by {gap:.1f} ms, {in_matmuls:.1f} ms of it in the products alone"
                                     if gap > 0 else f"none: Keras faster by {-gap:.1f} ms")})
    return rows, comparisons
