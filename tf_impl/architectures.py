"""The three architectures by name: which model class a config builds, and the reward model on
any of their backbones. Mirrored by `torch_impl/architectures.py`.

    bert  -> model.PolicyModel      (`bert` + `cls`),            BertForMaskedLM / BertLMHeadModel
    gpt2  -> gpt2.GPT2LMHeadModel   (`transformer` + `lm_head`), GPT2LMHeadModel
    llama -> llama.LlamaForCausalLM (`model` + `lm_head`),       Llama/Qwen2/MistralForCausalLM
"""

from __future__ import annotations

import keras
import tensorflow as tf

from shared.config import architecture_of
from tf_impl.gpt2 import GPT2LMHeadModel, GPT2Model
from tf_impl.llama import LlamaForCausalLM, LlamaModel
from tf_impl.model import Backbone, PolicyModel, ScalarHead

LANGUAGE_MODELS = {"bert": PolicyModel, "gpt2": GPT2LMHeadModel, "llama": LlamaForCausalLM}
# The backbone of each, under the attribute name its Hugging Face model gives it (its Keras name too).
BACKBONES = {"bert": ("bert", Backbone), "gpt2": ("transformer", GPT2Model), "llama": ("model", LlamaModel)}


def build_model(config, with_value_head: bool = False, dtype=None):
    """A freshly initialised language model of the config's architecture, every variable built."""
    return LANGUAGE_MODELS[architecture_of(config)](config, with_value_head=with_value_head, dtype=dtype)


def backbone_of(config, dtype=None):
    """(attribute name, a fresh backbone) of the config's architecture (the reward model's body);
    the backbone's Keras name is the attribute name, so its variables read as Hugging Face names."""
    name, backbone = BACKBONES[architecture_of(config)]
    return name, backbone(config, name=name, dtype=dtype)


# ----------------------------------------------------------------------------- the reward model

class RewardModel(keras.Model):
    """Backbone + scalar reward head; the reward of a sequence is read at its last real token.

    The backbone is the architecture's, under its Hugging Face name (`bert`, `transformer`, `model`),
    which is its Keras layer name too.
    """

    def __init__(self, config, dtype=None, **kwargs):
        super().__init__(dtype=dtype, **kwargs)
        self.config = config
        self.backbone_name, backbone = backbone_of(config, dtype)
        setattr(self, self.backbone_name, backbone)  # a tracked sub-layer, as torch's add_module
        self.reward_head = ScalarHead(config, name="reward_head", dtype=dtype)
        self.build_weights()

    @property
    def backbone(self) -> keras.layers.Layer:
        return getattr(self, self.backbone_name)

    def build_weights(self):
        """Create every variable now (Keras would wait for the first call)."""
        hidden_states, _, _ = self.backbone(tf.zeros([1, 1], tf.int32))
        self.reward_head(hidden_states)

    def call(self, input_ids, attention_mask, training=False):
        hidden_states, _, _ = self.backbone(input_ids, attention_mask=attention_mask, training=training)
        rewards = self.reward_head(hidden_states)                           # (B, T)
        last = tf.reduce_sum(tf.cast(attention_mask, tf.int32), -1) - 1    # (B,)
        return tf.gather(rewards, last, batch_dims=1)                       # (B,)
