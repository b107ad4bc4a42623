"""Every random stream of sftrl, named once, each with its own key.

A draw is `generator(STREAM, seed, *index)`: NumPy's generator of
`SeedSequence(seed, spawn_key=(key of STREAM, *index))`, NumPy's own mechanism for independent
streams from one seed. Each stream has a distinct key and a fixed number of indices, so two
streams (or two indices of one stream) never start from the same state; a stream is a pure
function of (seed, index), which is what lets a killed run resume bit for bit.

(Before, streams were `default_rng([seed, iteration, i])` and the like: row 7's rollout noise
was the prompt sampler's stream, row e's the shuffle of epoch e. `tests/test_random_streams.py`
shows the named streams pairwise distinct.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Stream:
    name: str
    key: int                 # the first word of the spawn key: distinct for every stream
    index: tuple[str, ...]   # what the rest of the spawn key counts, in order
    what: str


STREAMS = {s.name: s for s in (
    Stream("rollout_noise", 1, ("iteration", "row"), "RL: the Gumbel noise of each rollout row's sampled tokens"),
    Stream("prompt_order", 2, ("iteration",), "RL: which prompts an iteration rolls out on"),
    Stream("minibatch_order", 3, ("iteration", "epoch"), "RL: the shuffle of a rollout's rows into minibatches"),
    Stream("dropout", 4, ("rank",), "SFT, DPO, reward model: the framework's dropout generator, per process"),
    Stream("data_order", 5, ("epoch",), "SFT, DPO: the batches of an epoch (shuffle, task draws, buckets)"),
    Stream("train_masks", 6, ("step",), "masked-LM training: the tokens masked at a step"),
    Stream("eval_masks", 7, (), "masked-LM evaluation: the tokens masked, the same at every evaluation"),
    Stream("dpo_sampling", 8, ("row",), "DPO --pairs-from-samples: the Gumbel noise of each prompt's samples"),
    Stream("preference_order", 9, ("epoch",), "reward model: the shuffle of the pairs in an epoch"),
    Stream("bootstrap", 10, (), "evaluation: the resampled prompts of the paired bootstrap"),
    Stream("init", 11, (), "a model built from scratch (SFT, the reward model's head): its initial weights"),
    Stream("eval_sampling", 12, ("prompt", "sample"),
           "evaluation: the Gumbel noise of each prompt's sampled completions (the Monte-Carlo sequence KL)"),
    Stream("pretraining_text", 13, ("split",), "built-in data: the lines of the clean pretraining corpus (text.*)"),
    Stream("sign_flip", 14, (), "evaluation: the random signs of the paired permutation test"),
    Stream("ar1_bootstrap", 15, ("length", "rho_index"),
           "evaluation: the AR(1) series that calibrate the over-optimisation test at a fitted autocorrelation"),
    Stream("simulation", 16, (), "tests: the simulated studies and curves that measure an inference method's error rates"),
)}
assert len({s.key for s in STREAMS.values()}) == len(STREAMS), "every stream needs its own key"


def seed_sequence(stream: str, seed: int, *index: int) -> np.random.SeedSequence:
    """The SeedSequence of `stream` at `index` (as many numbers as the stream declares)."""
    spec = STREAMS[stream]
    if len(index) != len(spec.index):
        raise TypeError(f"stream {stream!r} is indexed by ({', '.join(spec.index)}), got {len(index)} numbers")
    return np.random.SeedSequence(int(seed), spawn_key=(spec.key, *map(int, index)))


def generator(stream: str, seed: int, *index: int) -> np.random.Generator:
    """A NumPy generator of the stream."""
    return np.random.default_rng(seed_sequence(stream, seed, *index))


def integer_seed(stream: str, seed: int, *index: int) -> int:
    """A 32-bit integer of the stream, for a framework's own generator (`torch.manual_seed`,
    `keras.utils.set_random_seed`, which also seeds NumPy's legacy generator: 32 bits at most)."""
    return int(seed_sequence(stream, seed, *index).generate_state(1, np.uint32)[0])
