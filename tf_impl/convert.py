"""Keras weights <-> Hugging Face-named safetensors files.

A Keras variable's path is the chain of layer names down to it, and the layer names are the
PyTorch attribute names, so the Hugging Face name is the path with '/' read as '.' and the
variable's own name mapped to torch's:

    bert/encoder/layer.0/attention/self/query/kernel  ->  bert.encoder.layer.0.attention.self.query.weight
    transformer/h.0/attn/c_attn/kernel                ->  transformer.h.0.attn.c_attn.weight
    model/layers.0/input_layernorm/weight             ->  model.layers.0.input_layernorm.weight

Dense kernels are stored (in, out) by Keras and (out, in) by torch: they are transposed, except
GPT-2's `GPT2_CONV1D_LAYERS`, which `transformers` stores (in, out) as Conv1D weights. Tied weights
are not stored (as `transformers.save_pretrained` does not store them): BERT's decoder
(`cls.predictions.decoder.*`, the word-embedding matrix and `cls.predictions.bias`) and a tied
decoder's `lm_head.weight` (the token table).

`load_pretrained` builds the model a folder holds (BERT, GPT-2, Llama, Qwen2, Mistral).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import save
from safetensors.tensorflow import load_file as load_file_tf

from shared.config import architecture_of, load_model_config
from shared.constants import GPT2_CONV1D_LAYERS, TIED_NAMES
from shared.errors import CheckpointError, ConfigError
from shared.io import atomic_write_bytes
from shared.weights import model_weights, read_sharded
from tf_impl.architectures import build_model

WEIGHTS_NAME = "model.safetensors"
SHARDED_INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"

# Keras variable name -> (torch parameter name, transpose?)
_LEAF_NAMES = {
    "kernel": ("weight", True),
    "embeddings": ("weight", False),
    "gamma": ("weight", False),
    "beta": ("bias", False),
    "bias": ("bias", False),
    "weight": ("weight", False),                # RMSNorm's scale (tf_impl.llama)
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
    if leaf == "kernel" and layers and layers[-1] in GPT2_CONV1D_LAYERS:
        transpose = False  # GPT-2's Conv1D weight is (in, out) in the files, as a Keras kernel
    return ".".join(layers + [torch_leaf]), transpose


def tied_names(model) -> tuple[str, ...]:
    """Names a file may hold that are no variable of the model (tied duplicates): BERT's decoder,
    and `lm_head.weight` of a decoder whose LM head is its token table."""
    config = getattr(model, "config", None)
    ties = (config is not None and architecture_of(config) != "bert"
            and getattr(config, "tie_word_embeddings", False))
    return TIED_NAMES + ("lm_head.weight",) if ties else TIED_NAMES


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
    unexpected = sorted(set(state) - set(expected) - set(tied_names(model)))
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
    state = read_safetensors(path)
    assign_numpy_state_dict(model, state, source=str(path), strict=strict)


# ----------------------------------------------------------------------------- model folders

def read_safetensors(path) -> dict[str, np.ndarray]:
    """The arrays of one safetensors file. Read through TensorFlow, which has bfloat16 (NumPy has
    not: most downloaded decoders are stored in it); the arrays keep the file's dtype."""
    try:
        return {name: tensor.numpy() for name, tensor in load_file_tf(str(path)).items()}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: not a valid safetensors file ({e})") from None


def read_model_weights(directory, config) -> dict[str, np.ndarray]:
    """The weights of a model folder (`model.safetensors`, else its sharded form) for a model of
    `config`, by Hugging Face name in file layout (`shared.weights.model_weights`: what is no
    weight dropped, a base model's names prefixed). Errors name the folder or file and the tensor."""
    directory = Path(directory)
    if (directory / WEIGHTS_NAME).exists():
        state = read_safetensors(directory / WEIGHTS_NAME)
    elif (directory / SHARDED_INDEX_NAME).exists():
        state = read_sharded(directory / SHARDED_INDEX_NAME, read_safetensors)
    else:
        raise CheckpointError(f"{directory}: no {WEIGHTS_NAME} or {SHARDED_INDEX_NAME}")
    state = model_weights(state, architecture_of(config))
    for name, value in state.items():
        if value.dtype.name not in ("float16", "bfloat16", "float32", "float64"):
            raise CheckpointError(f"{directory}: {name} has dtype {value.dtype.name}, expected a floating-point tensor")
    return state


def load_pretrained(directory, with_value_head: bool = False, dtype=None):
    """Build the Keras model a folder holds (ours or one `transformers` wrote: BERT, GPT-2, Llama,
    Qwen2, Mistral), its weights assigned strictly, a fresh value head if asked for. Its config is
    `model.config` (as `torch_impl.checkpoint.load_pretrained`'s)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such model folder")
    try:
        config = load_model_config(directory / CONFIG_NAME)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    state = read_model_weights(directory, config)
    model = build_model(config, with_value_head=with_value_head, dtype=dtype)
    if with_value_head:  # a fresh value head: the SFT checkpoint has none
        state.update({k: v for k, v in to_numpy_state_dict(model).items() if k.startswith("value_head.")})
    assign_numpy_state_dict(model, state, source=str(directory))
    return model


__all__ = ["hf_name", "tied_names", "to_numpy_state_dict", "assign_numpy_state_dict", "save_safetensors",
           "load_safetensors", "read_model_weights", "load_pretrained", "TIED_NAMES"]
