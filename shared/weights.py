"""Rules on the tensor names of a model folder, the same for the PyTorch and the Keras loader.

- Some tensors of a folder are no weight of our models: BERT's pooler and next-sentence head
  (pretraining leftovers) and, in older GPT-2 files, the causal-mask buffers `.attn.bias` /
  `.attn.masked_bias`. They are dropped.
- A folder saved from a base model (`GPT2Model`, `LlamaModel`: the original `openai-community/gpt2`
  files are such) names its tensors without the backbone's prefix (`h.0.attn.c_attn.weight`, not
  `transformer.h.0.attn.c_attn.weight`) and holds no LM head, which is then the tied embedding
  matrix. Its names get the prefix, as `transformers`' `from_pretrained` gives them.
"""

from __future__ import annotations

import json
from pathlib import Path

from shared.errors import CheckpointError

NOT_WEIGHTS = ("bert.pooler.", "cls.seq_relationship.")
NOT_WEIGHTS_SUFFIXES = (".attn.bias", ".attn.masked_bias")
# The attribute under which each architecture's model holds its backbone (its Hugging Face name).
BACKBONE_NAMES = {"bert": "bert", "gpt2": "transformer", "llama": "model"}


def model_weights(state: dict, architecture: str) -> dict:
    """A folder's tensors as the weights of our model of `architecture`, by Hugging Face name."""
    state = {name: value for name, value in state.items()
             if not name.startswith(NOT_WEIGHTS) and not name.endswith(NOT_WEIGHTS_SUFFIXES)}
    prefix = BACKBONE_NAMES[architecture] + "."
    if architecture != "bert" and state and not any(name.startswith((prefix, "lm_head.")) for name in state):
        state = {prefix + name: value for name, value in state.items()}
    return state


def read_sharded(index_path, read_file) -> dict:
    """The tensors of a sharded folder: `model.safetensors.index.json`'s weight_map names, for each
    tensor, the shard file that holds it; `read_file(path) -> {name: tensor}` reads one shard
    (each framework its own). Every tensor the index names must be in its shards."""
    index_path = Path(index_path)
    try:
        weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{index_path}: not a safetensors index (no weight_map: {e})") from None
    state = {}
    for shard in shards:
        if not (index_path.parent / shard).exists():
            raise CheckpointError(f"{index_path}: names the shard {shard}, which is not in the folder")
        state.update(read_file(index_path.parent / shard))
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise CheckpointError(f"{index_path}: {missing[0]} is in weight_map but in none of the shards")
    return state
