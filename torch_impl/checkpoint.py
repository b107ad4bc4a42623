"""Model folders without pickle: `config.json` + `model.safetensors`, as `transformers` writes them.

A folder written by `save_pretrained` loads in `transformers` natively (`BertForMaskedLM` for a
bidirectional model, `BertLMHeadModel` / `AutoModelForCausalLM` for a causal one), and
`load_pretrained` reads such folders from `transformers` too, including old ones holding
`pytorch_model.bin`, which is read with `torch.load(weights_only=True)` so no pickled code runs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from shared.config import ModelConfig
from shared.constants import TIED_NAMES
from shared.errors import CheckpointError, ConfigError
from shared.io import atomic_write_bytes
from torch_impl.model import SFTModel

WEIGHTS_NAME = "model.safetensors"
LEGACY_WEIGHTS_NAME = "pytorch_model.bin"
CONFIG_NAME = "config.json"


def state_dict_for_saving(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict without tied duplicates, each tensor contiguous and on the CPU."""
    return {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()
            if name not in TIED_NAMES}


def save_pretrained(model: SFTModel, directory) -> None:
    """Write `config.json` and `model.safetensors` into `directory`, each atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(directory / WEIGHTS_NAME, save(state_dict_for_saving(model),
                                                       metadata={"format": "pt"}))
    model.config.to_json_file(directory / CONFIG_NAME)


def read_state_dict(directory) -> dict[str, torch.Tensor]:
    """Tensors of a model folder: `model.safetensors`, else `pytorch_model.bin` (no pickle)."""
    directory = Path(directory)
    path = directory / WEIGHTS_NAME
    if path.exists():
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a valid safetensors file ({e})") from None
    path = directory / LEGACY_WEIGHTS_NAME
    if path.exists():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # weights_only refuses anything that is not plain tensors
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{path}: refused to load ({first_line})") from None
    raise CheckpointError(f"{directory}: no {WEIGHTS_NAME} or {LEGACY_WEIGHTS_NAME}")


def load_state_dict_strict(model: SFTModel, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy a state dict into the model; names and shapes must match exactly (tied duplicates
    may be absent). Errors name the folder and the first offending tensor."""
    own = model.state_dict()
    state = dict(state)
    for name in TIED_NAMES:
        if name in own:
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
                                  f"expects {tuple(own[name].shape)}")
    model.load_state_dict(state, strict=True)
    # load_state_dict copies values, so the tie (one shared Parameter) is kept.


def load_pretrained(directory, with_value_head: bool = False) -> SFTModel:
    """Build an `SFTModel` from a model folder (ours or a Hugging Face BERT one), in eval mode."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such model folder")
    try:
        config = ModelConfig.from_json_file(directory / CONFIG_NAME)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    state = {k: v for k, v in read_state_dict(directory).items()
             if not k.startswith("bert.pooler.") and not k.startswith("cls.seq_relationship.")}
    model = SFTModel(config, with_value_head=with_value_head)
    if with_value_head:  # a fresh value head: the SFT checkpoint has none
        state.update({k: v for k, v in model.state_dict().items() if k.startswith("value_head.")})
    load_state_dict_strict(model, state, str(directory))
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
    missing = [m for m in missing if not m.endswith(TIED_NAMES)]
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
