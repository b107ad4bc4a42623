"""Peak memory of one training stage, in a process of its own (so one stage's allocations do not
hide another's), importing only the framework the stage uses:

    python -m benchmarks.memory STAGE SIZE_JSON     STAGE: sft | reward_model | ppo

prints one JSON line {"stage", "imports_mib", "peak_mib", "seconds"}: the peak resident set
size (RSS) after the imports alone and after a few training steps at the benchmark's sizes.
`benchmarks.suites.suite_memory` runs it once per stage.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np

STEPS = 5


def peak_rss_mib() -> float:
    """The process's peak resident set size so far, MiB: VmHWM of /proc/self/status, which starts
    afresh at exec (getrusage's ru_maxrss does not on Linux: a child started by a 1.5 GB benchmark
    process would report at least 1.5 GB); ru_maxrss where there is no /proc."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024                      # "VmHWM:  123456 kB"
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024        # KiB on Linux


def model_config(s, attention_type):
    from shared.config import ModelConfig

    return ModelConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                       num_attention_heads=s["heads"], intermediate_size=4 * s["hidden"],
                       max_position_embeddings=max(2 * s["seq"], 64), attention_type=attention_type)


def sft(s):
    """SFTModel MLM steps (sparse head, AdamW) at the train suite's batch."""
    import torch

    from shared.data import mask_tokens
    from torch_impl.model import SFTModel

    rng = np.random.default_rng(0)
    ids = rng.integers(5, s["vocab"], size=(s["batch"], s["seq"]))
    masked, labels = mask_tokens(ids, np.ones_like(ids), {0, 1, 2, 3, 4}, 4, s["vocab"], rng)
    model = SFTModel(model_config(s, "bidirectional")).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for _ in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        model(torch.as_tensor(masked), torch.ones(ids.shape, dtype=torch.long), torch.as_tensor(labels)).backward()
        optimizer.step()


def reward_model(s):
    """Bradley-Terry steps of the Keras RewardModel on pairs of the train suite's batch and length."""
    import tensorflow as tf

    from tf_impl.architectures import RewardModel
    from tf_impl.reward_model import bradley_terry_step, reward_model_optimizer

    model = RewardModel(model_config(s, "bidirectional"))
    optimizer = reward_model_optimizer(1e-4)
    rng = np.random.default_rng(0)
    ids = [tf.constant(rng.integers(5, s["vocab"], size=(s["batch"], s["seq"])), tf.int32) for _ in range(2)]
    model(ids[0], tf.ones_like(ids[0]))
    optimizer.build(model.trainable_variables)
    step = bradley_terry_step(model, optimizer)
    for _ in range(STEPS):
        step(ids[0], tf.ones_like(ids[0]), ids[1], tf.ones_like(ids[1]))


def ppo(s):
    """PPO iterations (rollout, reward, update; sparse heads and XLA) at the ppo suite's batch."""
    from benchmarks.ppo_setup import ppo_trainer

    trainer, records = ppo_trainer(s, xla=True, sparse_head=True)
    for iteration in range(1, 4):
        trainer.iteration(records(iteration), iteration)


STAGES = {"sft": sft, "reward_model": reward_model, "ppo": ppo}
TENSORFLOW_STAGES = {"reward_model", "ppo"}  # the others run in PyTorch


def main(argv) -> int:
    stage, s = argv[0], json.loads(argv[1])
    if stage in TENSORFLOW_STAGES:
        import tf_impl  # noqa: F401  (TensorFlow, quietly)
    else:
        import torch  # noqa: F401  (the imports' share of the peak, measured apart)
    imports = peak_rss_mib()
    started = time.perf_counter()
    STAGES[stage](s)
    print(json.dumps({"stage": stage, "imports_mib": round(imports, 1), "peak_mib": round(peak_rss_mib(), 1),
                      "seconds": round(time.perf_counter() - started, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
