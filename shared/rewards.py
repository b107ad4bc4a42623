"""Reward functions for RL, framework-free: reward(prompt, completion, reference) -> float.

* task:        partial credit on the built-in tasks, in [0, 1] (a shaped reward);
* task-exact:  exact match on the built-in tasks, 0 or 1 (a sparse reward: most early samples
               score 0, so the policy gradient has little to go on -- compare the two);
* bleu:        sentence BLEU / 100 against the record's `reference` (any prompt data with
               references, not only the built-in tasks);
* a length penalty can be added to any of them: -coef * max(0, words - max_words).

A learned reward model (`model:DIR`) lives in `tf_impl.reward_model`; it is looked up by the
trainer, not here, because it needs TensorFlow.
"""

from __future__ import annotations

import math
from typing import Callable

from shared import tasks
from shared.errors import SftrlError
from shared.metrics import sentence_bleu

RewardFn = Callable[[str, str, "str | None"], float]


def task_partial(prompt: str, completion: str, reference: str | None = None) -> float:
    return tasks.partial_credit(prompt, completion)


def task_exact(prompt: str, completion: str, reference: str | None = None) -> float:
    return tasks.exact_match(prompt, completion)


def bleu(prompt: str, completion: str, reference: str | None = None) -> float:
    if not reference:
        raise ValueError("the bleu reward needs a 'reference' field in the prompt records")
    return sentence_bleu(completion, [reference]).score / 100.0


REWARDS: dict[str, RewardFn] = {"task": task_partial, "task-exact": task_exact, "bleu": bleu}


def with_length_penalty(fn: RewardFn, coef: float, max_words: int) -> RewardFn:
    """fn's reward minus coef for every word beyond max_words."""
    def reward(prompt, completion, reference=None):
        return fn(prompt, completion, reference) - coef * max(0, len(completion.split()) - max_words)
    return reward


def get_reward(name: str) -> RewardFn:
    if name not in REWARDS:
        raise SftrlError(f"--reward: unknown reward {name!r}; choose from "
                         f"{', '.join(REWARDS)}, or model:DIR for a trained reward model")
    return REWARDS[name]


def score_all(fn: RewardFn, prompts, completions, references=None) -> list[float]:
    """Rewards of a batch; a reward that is not a finite number is an error naming the prompt."""
    references = references or [None] * len(prompts)
    if hasattr(fn, "batch"):  # e.g. a reward model: one forward pass for the whole batch
        values = [float(v) for v in fn.batch(prompts, completions, references)]
    else:
        values = []
        for prompt, completion, reference in zip(prompts, completions, references):
            try:
                values.append(float(fn(prompt, completion, reference)))
            except ValueError as e:  # e.g. a prompt that is not a built-in task
                raise SftrlError(f"reward: cannot score prompt {prompt[:60]!r}: {e}") from None
    scores = []
    for prompt, value in zip(prompts, values):
        if not math.isfinite(value):
            raise SftrlError(f"reward: the reward function returned {value} for prompt {prompt[:60]!r}")
        scores.append(value)
    return scores
