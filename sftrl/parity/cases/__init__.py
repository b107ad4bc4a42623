"""The parity registry: one table of cases, from one op up to a training run, one module per level.

    common      helpers: tensors in and out, `tiny_config`, seeded weights
    ops         softmax, log-softmax, GELU, LayerNorm
    attention   scaled dot-product attention (plain and fused), multi-head vs Keras' layer
    model       a transformer block, the whole model's logits
    losses      every loss and RL quantity, NumPy vs torch_impl.losses vs tf_impl.losses
    gradients   of each loss (against its analytic form) and of the whole model
    optimizer   one AdamW step
    training    a 20-step SFT run
    generation  greedy tokens with the KV cache
    decoders    GPT-2 and Llama / Qwen2: RMSNorm, RoPE, SwiGLU, GQA, a pre-norm block, the whole
                model's logits and every layer, greedy tokens (its cases sit at the levels above)

Used by `tests/parity/` (pytest parametrised over CASES x dtypes) and by `sftrl parity`. Each
case's adapters are a few lines that turn NumPy inputs into framework tensors and call the
project's own functions (`shared.reference`, `torch_impl`, `tf_impl`).
"""

import tf_impl  # noqa: F401  (first: imports TensorFlow without its start-up noise)
from sftrl.parity.cases import attention, decoders, generation, gradients, losses, model, ops, optimizer, training

CASES = (ops.CASES + attention.CASES + model.CASES + losses.CASES + gradients.CASES + optimizer.CASES
         + training.CASES + generation.CASES + decoders.CASES)
