"""The RL job the benchmarks time and measure: the built-in prompts, a tokenizer trained on them,
a causal model of the benchmark's size, a PPOTrainer running PPO or another algorithm of the
family (TensorFlow only: no torch import at the top, so `benchmarks.memory` measures PPO's memory
without PyTorch's; `bert_folder` and `decoder_folder`, which write the folders of the TRL
comparison, import `transformers` when called)."""

from __future__ import annotations


def ppo_trainer(s, xla: bool, sparse_head: bool, algorithm: str = "ppo", folder=None):
    """-> (trainer, records(iteration) -> that iteration's batch of prompt records).

    folder: a `transformers` folder (`bert_folder`, `decoder_folder`) to load the policy and
    reference from, in place of a freshly initialised causal BERT of the benchmark's size."""
    from shared.config import PPOConfig
    from shared.rewards import task_partial
    from tf_impl.convert import load_pretrained
    from tf_impl.model import PolicyModel
    from tf_impl.ppo import PPOTrainer

    data = prompt_records()
    tokenizer = prompt_tokenizer(s, data)
    batch = s["ppo_batch"]
    ppo_config = PPOConfig(algorithm=algorithm, batch_size=batch, minibatch_size=min(16, batch),
                           group_size=min(4, batch), max_new_tokens=s["ppo_new_tokens"], xla=xla)
    if folder is None:
        config = bert_config(s, tokenizer)
        policy, reference = PolicyModel(config, with_value_head=ppo_config.spec.critic), PolicyModel(config)
    else:
        policy, reference = load_pretrained(folder, with_value_head=ppo_config.spec.critic), load_pretrained(folder)
    trainer = PPOTrainer(policy, reference, tokenizer, ppo_config, task_partial, log=lambda *a: None,
                         prompt_length=16, sparse_head=sparse_head)
    group = ppo_config.samples_per_prompt
    return trainer, lambda iteration: [data[(iteration * batch // group + i // group) % len(data)] for i in range(batch)]


def prompt_records():
    """The built-in RL prompts (256 records with their references), the same in every benchmark."""
    from shared.tasks import make_builtin_data

    return make_builtin_data(0, {"prompt.train": 256})["prompt.train"]


def prompt_tokenizer(s, data=None):
    """The tokenizer every RL benchmark uses: trained on the built-in prompts and references."""
    from shared.tokenizer import Tokenizer

    data = prompt_records() if data is None else data
    return Tokenizer.train([r["prompt"] + " = " + r["reference"] for r in data], vocab_size=max(s["vocab"], 300))


def bert_config(s, tokenizer):
    """The causal BERT of the benchmark's size, without dropout."""
    from shared.config import ModelConfig

    return ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                       num_attention_heads=s["heads"], intermediate_size=4 * s["hidden"], max_position_embeddings=64,
                       attention_type="causal", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def bert_folder(s, directory):
    """A `transformers.BertLMHeadModel` folder of `bert_config` (random weights) with
    `prompt_tokenizer`'s files: what TRL and our loader both read."""
    import torch
    import transformers

    tokenizer = prompt_tokenizer(s)
    config = bert_config(s, tokenizer)
    torch.manual_seed(0)
    transformers.BertLMHeadModel(transformers.BertConfig.from_dict(config.to_dict())).save_pretrained(directory)
    tokenizer.save_pretrained(directory, config.max_position_embeddings, generates=True)
    return directory


def decoder_folder(s, directory):
    """A `transformers` GPT-2 folder of the benchmark's size (random weights, no dropout) with
    `prompt_tokenizer`'s files: what TRL and our loader both read."""
    import torch
    import transformers

    tokenizer = prompt_tokenizer(s)
    config = transformers.GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=64, n_embd=s["hidden"],
                                     n_layer=s["layers"], n_head=s["heads"], resid_pdrop=0.0, embd_pdrop=0.0,
                                     attn_pdrop=0.0, bos_token_id=tokenizer.cls_id, eos_token_id=tokenizer.sep_id,
                                     pad_token_id=tokenizer.pad_id)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory, config.n_positions, generates=True)
    return directory
