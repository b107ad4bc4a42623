"""The RL job the benchmarks time and measure: the built-in prompts, a tokenizer trained on them,
a causal model of the benchmark's size, a PPOTrainer running PPO or another algorithm of the
family (TensorFlow only: no torch import here, so `benchmarks.memory` measures PPO's memory
without PyTorch's)."""

from __future__ import annotations


def ppo_trainer(s, xla: bool, sparse_head: bool, algorithm: str = "ppo"):
    """-> (trainer, records(iteration) -> that iteration's batch of prompt records)."""
    from shared.config import ModelConfig, PPOConfig
    from shared.rewards import task_partial
    from shared.tasks import make_builtin_data
    from shared.tokenizer import Tokenizer
    from tf_impl.model import PolicyModel
    from tf_impl.ppo import PPOTrainer

    data = make_builtin_data(0, {"prompt.train": 256})["prompt.train"]
    tokenizer = Tokenizer.train([r["prompt"] + " = " + r["reference"] for r in data], vocab_size=max(s["vocab"], 300))
    config = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                         num_attention_heads=s["heads"], intermediate_size=4 * s["hidden"], max_position_embeddings=64,
                         attention_type="causal", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    batch = s["ppo_batch"]
    ppo_config = PPOConfig(algorithm=algorithm, batch_size=batch, minibatch_size=min(16, batch),
                           group_size=min(4, batch), max_new_tokens=s["ppo_new_tokens"], xla=xla)
    trainer = PPOTrainer(PolicyModel(config, with_value_head=ppo_config.spec.critic), PolicyModel(config), tokenizer,
                         ppo_config, task_partial, log=lambda *a: None, prompt_length=16, sparse_head=sparse_head)
    group = ppo_config.samples_per_prompt
    return trainer, lambda iteration: [data[(iteration * batch // group + i // group) % len(data)] for i in range(batch)]
