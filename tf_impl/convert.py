"""Keras weights <-> Hugging Face-named safetensors files.

A Keras variable's path is the chain of layer names down to it, and the layer names are the
PyTorch attribute names, so the Hugging Face name is the path with '/' read as '.' and the
variable's own name mapped to torch's:

    bert/encoder/layer.0/attention/self/query/kernel  ->  bert.encoder.layer.0.attention.self.query.weight

Dense kernels are stored (in, out) by Keras and (out, in) by torch: they are transposed. Nothing
else is special-cased. The tied decoder (`cls.predictions.decoder.*`) is not stored (as
`transformers.save_pretrained` does not store it); it is the word-embedding matrix and
`cls.predictions.bias`.
"""

from __future__ import annotations

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save

from shared.constants import TIED_NAMES
from shared.errors import CheckpointError
from shared.io import atomic_write_bytes

# Keras variable name -> (torch parameter name, transpose?)
_LEAF_NAMES = {
    "kernel": ("weight", True),
    "embeddings": ("weight", False),
    "gamma": ("weight", False),
    "beta": ("bias", False),
    "bias": ("bias", False),
    "lora_kernel_a": ("lora_A.weight", True),   # LoRA adapters (tf_impl.lora): peft's names
    "lora_kernel_b": ("lora_B.weight", True),
}


def hf_name(variable, model=None) -> tuple[str, bool]:
    """(Hugging Face name, transpose?) of a Keras variable, from its path.

    A variable created while the model itself was being called has the model's name in
    front of its path (`policy_model/bert/...`); that prefix is not part of the name.
    """
    path = variable.path
    if model is not None and path.startswith(model.name + "/"):
        path = path[len(model.name) + 1:]
    *layers, leaf = path.split("/")
    if leaf not in _LEAF_NAMES:
        raise ValueError(f"no Hugging Face name for Keras variable {variable.path!r}")
    torch_leaf, transpose = _LEAF_NAMES[leaf]
    return ".".join(layers + [torch_leaf]), transpose


def to_numpy_state_dict(model) -> dict[str, np.ndarray]:
    """Every weight of a Keras model as {Hugging Face name: array in torch layout}."""
    state = {}
    for variable in model.weights:
        name, transpose = hf_name(variable, model)
        value = np.asarray(variable.numpy())
        state[name] = np.ascontiguousarray(value.T if transpose else value)
    return state


def assign_numpy_state_dict(model, state: dict[str, np.ndarray], source: str = "<state dict>",
                            strict: bool = True) -> None:
    """Copy arrays into a Keras model by Hugging Face name. Shapes and names must match.

    With strict=True every model weight must be present and every array used (tied duplicates
    excepted); the error names what is missing or left over.
    """
    expected = {}
    for variable in model.weights:
        name, transpose = hf_name(variable, model)
        expected[name] = (variable, transpose)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected) - set(TIED_NAMES))
    if missing or (strict and unexpected):
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} weight(s), e.g. {missing[0]}")
        if strict and unexpected:
            parts.append(f"{len(unexpected)} unexpected weight(s), e.g. {unexpected[0]}")
        raise CheckpointError(f"{source}: does not match the model: {'; '.join(parts)}")
    for name, (variable, transpose) in expected.items():
        value = np.asarray(state[name])
        value = value.T if transpose else value
        if tuple(value.shape) != tuple(variable.shape):
            raise CheckpointError(f"{source}: {name} has shape {tuple(np.asarray(state[name]).shape)}, "
                                  f"the model expects {tuple(variable.shape[::-1] if transpose else variable.shape)}")
        variable.assign(value.astype(variable.dtype))


def save_safetensors(model, path) -> None:
    """Write a Keras model's weights as Hugging Face-named safetensors, atomically."""
    atomic_write_bytes(path, save(to_numpy_state_dict(model), metadata={"format": "pt"}))


def load_safetensors(model, path, strict: bool = True) -> None:
    """Read Hugging Face-named safetensors (from PyTorch or from `save_safetensors`) into Keras."""
    try:
        state = load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a valid safetensors file ({e})") from None
    assign_numpy_state_dict(model, state, source=str(path), strict=strict)


__all__ = ["hf_name", "to_numpy_state_dict", "assign_numpy_state_dict", "save_safetensors",
           "load_safetensors", "TIED_NAMES"]
