"""LoRA in Keras (Hu et al. 2021), with Keras 3's own `Dense.enable_lora`: W x becomes
(W + (alpha / r) A B) x with A (in, r), B (r, out), A random and B zero at the start, W frozen.

The same layers as `peft` on the PyTorch side (`shared.constants.LORA_TARGETS_BY_ARCHITECTURE`:
every linear layer of a block -- attention and feed-forward -- in BERT, GPT-2 and Llama), the same scale
alpha / r, and `peft`'s tensor names: Keras' `lora_kernel_a` is
`lora_A.weight` transposed, `lora_kernel_b` is `lora_B.weight` transposed
(`tf_impl.convert.hf_name`), so an adapter file written on one side loads on the other.
Keras keeps the adapter kernels in float32 whatever the layer's dtype.
"""

from __future__ import annotations

import functools

import numpy as np

from shared.config import architecture_of
from shared.constants import BLOCKS, LORA_EMBEDDINGS_BY_ARCHITECTURE, LORA_TARGETS_BY_ARCHITECTURE, PEFT_PREFIX
from shared.errors import CheckpointError
from tf_impl.convert import hf_name, to_numpy_state_dict


def sublayer(layer, path: str):
    """The layer at a dotted path of PyTorch attribute names ("attention.output.dense") below `layer`.
    Keras keeps `output` for itself: our layers hold that one as `output_` (named "output")."""
    return functools.reduce(lambda parent, name: getattr(parent, "output_" if name == "output" else name),
                            path.split("."), layer)


def lora_layers(model):
    """The Dense layers that take adapters, in order: the architecture's targets of every block."""
    architecture = architecture_of(model.config)
    blocks = sublayer(model.backbone, BLOCKS[architecture])
    return [sublayer(block, target) for block in blocks for target in LORA_TARGETS_BY_ARCHITECTURE[architecture]]


def enable_lora(model, rank: int, alpha: float, embeddings: bool = False) -> int:
    """Adapters of rank `rank` on every target layer; everything else frozen but the value head
    (which PPO trains from zero) and, with `embeddings`, the embedding layer(s) and an untied LM head
    (`shared.constants.LORA_EMBEDDINGS_BY_ARCHITECTURE`, as `torch_impl.sft.add_lora`), trained in
    full. Returns the number of trainable parameters."""
    for layer in lora_layers(model):
        layer.enable_lora(rank, lora_alpha=alpha)
    trained = ("value_head",) + (LORA_EMBEDDINGS_BY_ARCHITECTURE[architecture_of(model.config)] if embeddings else ())
    for variable in model.weights:
        variable.trainable = ("lora_kernel" in variable.path
                              or hf_name(variable, model)[0].startswith(tuple(f"{path}." for path in trained)))
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def is_lora_name(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def lora_state_dict(model) -> dict[str, np.ndarray]:
    """The adapters as `peft` saves them: {base_model.model.<layer>.lora_A.weight: (r, in), ...}."""
    return {PEFT_PREFIX + name: value for name, value in to_numpy_state_dict(model).items() if is_lora_name(name)}


def load_lora_state_dict(model, state: dict, source: str = "<adapter>") -> None:
    """Set the adapters from `peft`-named arrays (the inverse of `lora_state_dict`)."""
    variables = {hf_name(v, model)[0]: v for v in model.weights if "lora_kernel" in v.path}
    names = {PEFT_PREFIX + name for name in variables}
    if set(state) != names:
        missing, extra = sorted(names - set(state)), sorted(set(state) - names)
        raise CheckpointError(f"{source}: adapters do not match the model (missing {missing[:1]}, "
                              f"unexpected {extra[:1]})")
    for name, variable in variables.items():
        value = np.asarray(state[PEFT_PREFIX + name]).T
        if value.shape != tuple(variable.shape):
            raise CheckpointError(f"{source}: {name} has shape {value.shape[::-1]}, expected {tuple(variable.shape)[::-1]}")
        variable.assign(value.astype(variable.dtype))


def merged_state_dict(model) -> dict[str, np.ndarray]:
    """Every weight in Hugging Face names with the adapters merged into their layers' kernels
    (W + (alpha / r) A B, in the kernel's dtype): a plain model `transformers` loads."""
    state = {name: value for name, value in to_numpy_state_dict(model).items() if not is_lora_name(name)}
    for layer in lora_layers(model):
        if layer.lora_enabled:
            name, transpose = hf_name(layer._kernel, model)
            kernel = np.asarray(layer.kernel)                               # the merged kernel, (in, out)
            # in file layout, contiguous: safetensors' numpy `save` writes an array's buffer as it
            # lies in memory, so a transposed view would be written untransposed
            state[name] = np.ascontiguousarray(kernel.T if transpose else kernel)
    return state
