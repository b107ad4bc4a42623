"""The three architectures by name: which model class a config builds, and the reward model on
any of their backbones. Mirrored by `tf_impl/architectures.py`.

    bert  -> model.SFTModel        (`bert` + `cls`),            BertForMaskedLM / BertLMHeadModel
    gpt2  -> gpt2.GPT2LMHeadModel   (`transformer` + `lm_head`), GPT2LMHeadModel
    llama -> llama.LlamaForCausalLM (`model` + `lm_head`),       Llama/Qwen2/MistralForCausalLM
"""

from __future__ import annotations

import torch.nn as nn

from shared.config import architecture_of
from torch_impl.gpt2 import GPT2LMHeadModel, GPT2Model
from torch_impl.llama import LlamaForCausalLM, LlamaModel
from torch_impl.model import Backbone, ScalarHead, SFTModel

LANGUAGE_MODELS = {"bert": SFTModel, "gpt2": GPT2LMHeadModel, "llama": LlamaForCausalLM}
# The backbone of each, under the attribute name its Hugging Face model gives it.
BACKBONES = {"bert": ("bert", Backbone), "gpt2": ("transformer", GPT2Model), "llama": ("model", LlamaModel)}


def build_model(config, with_value_head: bool = False):
    """A freshly initialised language model of the config's architecture."""
    return LANGUAGE_MODELS[architecture_of(config)](config, with_value_head=with_value_head)


def backbone_of(config):
    """(attribute name, a fresh backbone) of the config's architecture (the reward model's body)."""
    name, backbone = BACKBONES[architecture_of(config)]
    return name, backbone(config)


# ----------------------------------------------------------------------------- the reward model

class RewardModel(nn.Module):
    """Backbone + scalar reward head; the reward of a sequence is read at its last real token.

    The backbone is the architecture's, under its Hugging Face name (`bert`, `transformer`, `model`).
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.backbone_name, backbone = backbone_of(config)
        self.add_module(self.backbone_name, backbone)
        self.reward_head = ScalarHead(config)

    @property
    def backbone(self) -> nn.Module:
        return getattr(self, self.backbone_name)

    def forward(self, input_ids, attention_mask):
        hidden_states, _, _ = self.backbone(input_ids, attention_mask=attention_mask)
        rewards = self.reward_head(hidden_states)                           # (B, T)
        last = attention_mask.long().sum(-1) - 1                            # (B,)
        return rewards.gather(1, last[:, None]).squeeze(1)                  # (B,)
