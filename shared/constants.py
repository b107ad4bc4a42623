"""Numbers that both frameworks must agree on. They live here and nowhere else."""

# Label id that every loss skips (PyTorch's CrossEntropyLoss default; Hugging Face's convention).
IGNORE_INDEX = -100

# Score given to a masked-out attention position before the softmax. Large enough that
# exp(fill - max) is exactly 0 in float32 and float64, small enough to stay finite in bf16.
ATTENTION_MASK_FILL = -1e9

# LayerNorm epsilon and weight-init standard deviation of BERT (config.json defaults).
LAYER_NORM_EPS = 1e-12
INIT_STD = 0.02

# Special tokens, in id order: a tokenizer trained by sftrl gives them ids 0..4.
PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
CLS_TOKEN = "[CLS]"
SEP_TOKEN = "[SEP]"
MASK_TOKEN = "[MASK]"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN, MASK_TOKEN)

# Added to the variance before the square root when whitening advantages or rewards.
WHITEN_EPS = 1e-8

# Added to a group's standard deviation in GRPO's advantage (score - mean) / (std + eps), so that
# a group whose scores are all equal gets advantage 0, not 0 / 0 (TRL's value).
GRPO_EPS = 1e-4

# GRPO's two ways to average the per-token loss: "sequence" = the mean over each completion's
# tokens, then over completions (Shao et al. 2024); "token" = over all the batch's tokens at once
# (every token weighs the same, long completions weigh more; Yu et al. 2025, DAPO).
LOSS_NORMALISATIONS = ("sequence", "token")

# The LM head's decoder is the word-embedding matrix and its bias is `cls.predictions.bias`
# (tied): checkpoints do not store these two names, and loading does not expect them.
TIED_NAMES = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")

# Adam's (beta1, beta2) and epsilon in both trainers (Kingma & Ba's defaults).
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
# The reward model's Adam epsilon: Keras' default, which it has always trained with.
REWARD_MODEL_ADAM_EPS = 1e-7

# LoRA: each architecture's targets, as paths inside one block: every linear layer of a block,
# attention and feed-forward, as QLoRA (Dettmers et al. 2023) and later practice do -- adapters on
# the attention projections alone learn far less (Biderman et al. 2024; Schulman et al. 2025,
# "LoRA without regret"). Outside the blocks nothing is adapted: not the embeddings, not the LM
# head (BERT's `cls.predictions.transform.dense` is part of the head, which GPT-2 and Llama do not
# have, and which QLoRA's "all linear layers" leaves out too), not the value head. peft wraps the
# full module names of these paths in every block (torch_impl.sft.lora_module_names), tf_impl.lora
# walks the same paths: the one table both frameworks read.
LORA_TARGETS_BY_ARCHITECTURE = {
    "bert": ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
             "intermediate.dense", "output.dense"),
    "gpt2": ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"),
    "llama": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
              "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
}
# --lora-embeddings: what trains in full beside the adapters (as peft's `modules_to_save` does), as
# Hugging Face module paths -- each architecture's embedding layer(s): BERT's whole `bert.embeddings`
# (word, position and token-type tables and their LayerNorm), GPT-2's token and position tables,
# Llama's token table; and the LM head where it is untied (GPT-2, Llama). With a tied head (this
# project's default) the token table is the head's matrix, so it trains both roles; an untied head
# trains too, or the switch would train what tokens mean on the way in and not on the way out --
# the SFT layout's new role (answers after [SEP]) is in both. BERT's head transform and bias stay
# frozen. A tied `lm_head` is the token table itself, so it adds nothing.
LORA_EMBEDDINGS_BY_ARCHITECTURE = {
    "bert": ("bert.embeddings",),
    "gpt2": ("transformer.wte", "transformer.wpe", "lm_head"),
    "llama": ("model.embed_tokens", "lm_head"),
}
# LoRA's defaults (Schulman et al. 2025): the scale is alpha / rank with alpha fixed, so the best
# learning rate hardly depends on the rank. They find it about 10x full fine-tuning's on models
# thousands wide; LoRA's step relative to full fine-tuning's grows like alpha / sqrt(rank * width),
# and at this project's width (128) 10x diverged (SFT, rank 4 and 16: the loss spiked to ~8 within
# 40 steps) while 3x trained to the same loss at rank 4 and 16 -- so 3x, for SFT and RL alike.
LORA_ALPHA = 32.0
LORA_LR_MULTIPLIER = 3.0
# Where each architecture's backbone keeps its list of blocks.
BLOCKS = {"bert": "encoder.layer", "gpt2": "h", "llama": "layers"}
# The prefix of an adapter's tensor names in the files `peft` writes (adapter_model.safetensors).
PEFT_PREFIX = "base_model.model."

# GPT-2's projections, stored by `transformers` as Conv1D weights of shape (in, out) -- the layout
# of a Keras Dense kernel, the transpose of a torch Linear weight.
GPT2_CONV1D_LAYERS = ("c_attn", "c_proj", "c_fc")
