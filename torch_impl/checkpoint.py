"""Model folders without pickle: `config.json` + `model.safetensors`, as `transformers` writes them.

Three architectures, picked by config.json's `model_type`: bert, gpt2, llama (qwen2 and mistral
are llama's kind). A folder written by `save_pretrained` loads in `transformers` natively
(`BertForMaskedLM` / `BertLMHeadModel`, `GPT2LMHeadModel`, `LlamaForCausalLM` / `Qwen2ForCausalLM` /
`MistralForCausalLM`, or `AutoModelForCausalLM`), and `load_pretrained` reads such folders from
`transformers` too: one `model.safetensors`, a sharded one (`model.safetensors.index.json`), or an
old `pytorch_model.bin`, read with `torch.load(weights_only=True)` so no pickled code runs.

The one layout difference from `transformers`: GPT-2's projections are `Conv1D` weights (in, out)
in its files and `nn.Linear` weights (out, in) here; they are transposed at this boundary.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from shared.config import architecture_of, load_model_config
from shared.constants import GPT2_CONV1D_LAYERS, TIED_NAMES
from shared.errors import CheckpointError, ConfigError
from shared.io import atomic_write_bytes
from shared.weights import model_weights, read_sharded
from torch_impl.architectures import build_model
from torch_impl.model import LanguageModel

WEIGHTS_NAME = "model.safetensors"
SHARDED_INDEX_NAME = "model.safetensors.index.json"
LEGACY_WEIGHTS_NAME = "pytorch_model.bin"
CONFIG_NAME = "config.json"


def tied_duplicates(model: torch.nn.Module) -> set[str]:
    """Names in the state dict whose tensor is an earlier name's (tied weights: BERT's
    `cls.predictions.decoder.*`, a tied decoder's `lm_head.weight`). Files do not store them."""
    seen, tied = set(), set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if tensor.data_ptr() in seen:
            tied.add(name)
        seen.add(tensor.data_ptr())
    return tied | {n for n in TIED_NAMES if n in model.state_dict()}


def is_conv1d(name: str, config) -> bool:
    """A GPT-2 projection weight, stored (in, out) by `transformers`' Conv1D."""
    return config.model_type == "gpt2" and name.endswith(tuple(f"{layer}.weight" for layer in GPT2_CONV1D_LAYERS))


def to_file_layout(state: dict, config) -> dict:
    """Our state dict in the layout of a `transformers` folder (GPT-2's Conv1D weights transposed);
    the same function goes back, as a transpose is its own inverse."""
    return {name: (tensor.T if is_conv1d(name, config) else tensor) for name, tensor in state.items()}


def state_dict_for_saving(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict in file layout, without tied duplicates, each tensor contiguous on the CPU."""
    tied = tied_duplicates(model)
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items() if name not in tied}
    return {name: tensor.contiguous() for name, tensor in to_file_layout(state, model.config).items()}


def save_pretrained(model: LanguageModel, directory) -> None:
    """Write `config.json` and `model.safetensors` into `directory`, each atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(directory / WEIGHTS_NAME, save(state_dict_for_saving(model),
                                                       metadata={"format": "pt"}))
    model.config.to_json_file(directory / CONFIG_NAME)


def _load_safetensors(path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a valid safetensors file ({e})") from None


def read_state_dict(directory) -> dict[str, torch.Tensor]:
    """Tensors of a model folder (file layout): `model.safetensors`, its sharded form, else
    `pytorch_model.bin` (no pickle)."""
    directory = Path(directory)
    path = directory / WEIGHTS_NAME
    if path.exists():
        return _load_safetensors(path)
    if (directory / SHARDED_INDEX_NAME).exists():
        return read_sharded(directory / SHARDED_INDEX_NAME, _load_safetensors)
    path = directory / LEGACY_WEIGHTS_NAME
    if path.exists():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # weights_only refuses anything that is not plain tensors
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{path}: refused to load ({first_line})") from None
    raise CheckpointError(f"{directory}: no {WEIGHTS_NAME}, {SHARDED_INDEX_NAME} or {LEGACY_WEIGHTS_NAME}")


def load_state_dict_strict(model: LanguageModel, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy a state dict (our layout) into the model; names and shapes must match exactly (tied
    duplicates may be absent). Errors name the folder and the first offending tensor."""
    own = model.state_dict()
    state = dict(state)
    for name in tied_duplicates(model):
        state.setdefault(name, own[name])
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} weight(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected weight(s), e.g. {unexpected[0]}")
        raise CheckpointError(f"{source}: does not match the model: {'; '.join(parts)}")
    for name, tensor in state.items():
        if not torch.is_floating_point(tensor):
            raise CheckpointError(f"{source}: {name} has dtype {str(tensor.dtype).replace('torch.', '')}, "
                                  "expected a floating-point tensor")
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise CheckpointError(f"{source}: {name} has shape {tuple(tensor.shape)}, the model "
                                  f"expects {tuple(own[name].shape)} from config.json")
    model.load_state_dict(state, strict=True)
    # load_state_dict copies values, so the tie (one shared Parameter) is kept.


def load_pretrained(directory, with_value_head: bool = False) -> LanguageModel:
    """Build the model a folder holds (ours or one `transformers` wrote: BERT, GPT-2, Llama,
    Qwen2, Mistral), in eval mode. Its config is `model.config`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such model folder")
    try:
        config = load_model_config(directory / CONFIG_NAME)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    state = model_weights(read_state_dict(directory), architecture_of(config))
    model = build_model(config, with_value_head=with_value_head)
    if with_value_head:  # a fresh value head: the SFT checkpoint has none
        state.update({k: v for k, v in model.state_dict().items() if k.startswith("value_head.")})
    load_state_dict_strict(model, to_file_layout(state, config), str(directory))
    return model.eval()


# ----------------------------------------------------------------------------- training checkpoints
# What a training run writes besides the model: the model's own tensors (LoRA adapters
# included) and the optimizer's, as flat name -> tensor dicts that safetensors stores.

def unique_state(module) -> dict[str, torch.Tensor]:
    """State dict without tied duplicates (safetensors refuses shared tensors): a copy, taken now
    (on CPU `detach().cpu()` alone would share the parameters' storage and follow later steps --
    the "best weights" kept in memory would silently be the last ones)."""
    seen, out = set(), {}
    for name, tensor in module.state_dict().items():
        if tensor.data_ptr() in seen or name.endswith(TIED_NAMES):
            continue
        seen.add(tensor.data_ptr())
        out[name] = tensor.detach().cpu().clone().contiguous()
    return out


def load_unique_state(module, state, source):
    """Load `unique_state`'s tensors back; anything missing or unexpected is a CheckpointError."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    tied = tied_duplicates(module)
    missing = [m for m in missing if m not in tied and not m.endswith(TIED_NAMES)]
    if missing or unexpected:
        raise CheckpointError(f"{source}: does not match the model (missing {missing[:1]}, "
                              f"unexpected {unexpected[:1]})")


def optimizer_tensors(optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state as flat tensors: "{parameter index}.{key}"."""
    out = {}
    for i, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            out[f"{i}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous().clone()
    return out


def load_optimizer_tensors(optimizer, tensors):
    """The inverse of `optimizer_tensors` (the optimizer's hyperparameters are its own)."""
    state_dict = optimizer.state_dict()
    state = {}
    for name, value in tensors.items():
        i, key = name.split(".", 1)
        state.setdefault(int(i), {})[key] = value
    state_dict["state"] = state
    optimizer.load_state_dict(state_dict)
