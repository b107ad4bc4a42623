"""Every random stream is named once (`shared.random_streams`), and no two share a state."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from shared.random_streams import STREAMS, generator, integer_seed, seed_sequence

INDEX_VALUES = range(9)  # iterations, rows, epochs, steps: small numbers, where collisions were


def all_states(seed):
    """The first 4 words of every stream's state at every small index: {(stream, index): words}."""
    states = {}
    for name, spec in STREAMS.items():
        for index in itertools.product(INDEX_VALUES, repeat=len(spec.index)):
            states[(name, index)] = tuple(seed_sequence(name, seed, *index).generate_state(4))
    return states


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_no_two_named_streams_or_indices_share_a_state(seed):
    states = all_states(seed)
    assert len(set(states.values())) == len(states)


def test_the_old_keys_collided_and_the_named_streams_do_not():
    """Before: rollout noise of row 7 was default_rng((seed, it, 7)), the prompt sampler
    default_rng([seed, it, 7]), the minibatch order of epoch e default_rng([seed, it, e])."""
    old = [np.random.default_rng((0, 3, 7)).random(4), np.random.default_rng([0, 3, 7]).random(4)]
    assert np.array_equal(*old)
    new = [generator("rollout_noise", 0, 3, 7).random(4), generator("prompt_order", 0, 3).random(4),
           generator("minibatch_order", 0, 3, 7).random(4)]
    assert not any(np.array_equal(a, b) for a, b in itertools.combinations(new, 2))


def test_a_stream_is_a_pure_function_of_seed_and_index():
    assert np.array_equal(generator("minibatch_order", 5, 2, 1).permutation(64),
                          generator("minibatch_order", 5, 2, 1).permutation(64))
    assert integer_seed("dropout", 3, 0) == integer_seed("dropout", 3, 0) != integer_seed("dropout", 3, 1)
    assert 0 <= integer_seed("dropout", 3, 0) < 2 ** 32


def test_a_stream_takes_exactly_its_declared_indices():
    with pytest.raises(TypeError, match=r"indexed by \(iteration, row\)"):
        generator("rollout_noise", 0, 3)
    with pytest.raises(KeyError):
        generator("no_such_stream", 0)
