"""The RL job against TRL's own trainer, in the same process: TRL's GRPOTrainer (PyTorch) and our
GRPO -- the same algorithm -- and PPO (TensorFlow, sparse heads + XLA), on the same weights, prompts,
reward and batch. Twice: on a `transformers.BertLMHeadModel` folder of the PPO suite's causal model,
and on a `GPT2LMHeadModel` folder of the same size (`ppo_setup.decoder_folder`), the decoder TRL is
built for. Our trainers load the folder TRL trains. Optional: needs `pip install ".[peers]"` (trl,
datasets); without it the suite is skipped with one line saying so.

One iteration is one rollout and its updates, alike on both sides: `ppo_batch` completions of
`ppo_new_tokens` tokens, then `ppo_epochs` passes of minibatches of 16 -- GRPO's
generation_batch_size, per_device_train_batch_size, steps_per_generation and num_iterations say the
same. GRPO has no value head and samples 4 completions per prompt (16 prompts x 4 = 64), where PPO
samples one per prompt: the same number of sequences and tokens, generated and trained on.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np

from benchmarks.ppo_setup import bert_folder, decoder_folder, ppo_trainer, prompt_records
from benchmarks.timing import comparison, row

MEASURED = 3  # iterations timed on each side, after one that warms up (traces, compiles)


class SuiteSkipped(Exception):
    """A suite that cannot run here; the message says why and how to enable it."""


def trl_iteration_seconds(s, folder, tokenizer, data, config, iterations):
    """Seconds per GRPO iteration (rollout + every update of it), after the first."""
    import transformers
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from shared.rewards import task_partial

    references = {r["prompt"]: r["reference"] for r in data}

    def reward(prompts, completions, **_):
        return [task_partial(p, c, references[p]) for p, c in zip(prompts, completions)]

    class StepClock(transformers.TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    batch, minibatch = s["ppo_batch"], min(16, s["ppo_batch"])
    steps_per_iteration = (batch // minibatch) * config.ppo_epochs
    clock = StepClock()
    args = GRPOConfig(output_dir=f"{folder}/trl", use_cpu=True, bf16=False, report_to=[], save_strategy="no",
                      disable_tqdm=True, logging_steps=10_000, learning_rate=config.lr, beta=config.kl_coef,
                      temperature=config.temperature, num_generations=4 if batch >= 8 else 2,
                      generation_batch_size=batch, per_device_train_batch_size=minibatch,
                      max_completion_length=s["ppo_new_tokens"], num_iterations=config.ppo_epochs,
                      max_steps=steps_per_iteration * iterations)
    trainer = GRPOTrainer(model=folder, reward_funcs=reward, args=args, processing_class=tokenizer,
                          train_dataset=Dataset.from_list([{"prompt": r["prompt"]} for r in data]), callbacks=[clock])
    trainer.train()
    ends = np.array(clock.times)[steps_per_iteration - 1::steps_per_iteration]  # the end of each iteration
    return np.diff(ends)                                                         # (iterations - 1,)


def suite_peers(s, device):
    try:
        import datasets  # noqa: F401
        import trl
    except ImportError:
        raise SuiteSkipped("TRL is not installed; pip install \".[peers]\" adds it (trl, datasets)") from None
    if device != "cpu":
        raise SuiteSkipped("the TRL comparison runs on the CPU only")
    rows, comparisons = [], []
    for model, builder in (("BERT", bert_folder), ("GPT-2", decoder_folder)):
        with tempfile.TemporaryDirectory() as folder:
            timings = iteration_timings(s, builder(s, folder), with_ppo=model == "BERT")
        case = (f"one RL iteration of a {model} (batch {s['ppo_batch']}, {s['ppo_new_tokens']} new tokens, "
                "rollout + updates)")
        rows += [row("peers", case, side, t) for side, t in timings.items()]
        trl_ms = 1e3 * timings["TRL GRPOTrainer (pytorch)"]["median_s"]
        comparisons += [comparison("peers", f"{model}: TRL GRPOTrainer / {name} iteration time", trl_ms,
                                   1e3 * t["median_s"], note=f"trl {trl.__version__}; "
                                   f"{'the same algorithm' if 'GRPO' in name else 'GRPO has no value head'}"
                                   "; run one after the other")
                        for name, t in timings.items() if name.startswith("our")]
    return rows, comparisons


def iteration_timings(s, folder, with_ppo: bool) -> dict:
    """{side: {"median_s", "iqr_s"}} of one iteration: TRL's GRPOTrainer on `folder`, then our
    GRPO (and PPO) on the same weights in Keras, loaded from it."""
    import transformers

    ours = {"our GRPO (tensorflow, XLA)": ppo_trainer(s, xla=True, sparse_head=True, algorithm="grpo", folder=folder)}
    if with_ppo:
        ours["our PPO (tensorflow, XLA)"] = ppo_trainer(s, xla=True, sparse_head=True, folder=folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    tokenizer.eos_token = "[SEP]"  # a completion ends at [SEP], as in our rollouts
    data = prompt_records()
    config = next(iter(ours.values()))[0].config
    times = {"TRL GRPOTrainer (pytorch)": trl_iteration_seconds(s, folder, tokenizer, data, config, 1 + MEASURED)}
    times.update({name: [] for name in ours})
    for iteration in range(1, 2 + MEASURED):
        for name, (trainer, records) in ours.items():
            metrics, _ = trainer.iteration(records(iteration), iteration)
            if iteration > 1:
                times[name].append(sum(metrics[f"time/{phase}"] for phase in ("rollout", "reward", "update")))
    return {name: {"median_s": float(np.median(t)), "iqr_s": float(np.subtract(*np.percentile(t, [75, 25])))}
            for name, t in times.items()}
