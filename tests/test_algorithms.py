"""The RL algorithms are records (`shared.algorithms`): everything an algorithm chooses is declared
there, and no code outside it compares an algorithm's name."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from shared import reference as ref
from shared.algorithms import ALGORITHMS
from shared.config import PPOConfig

REPO = Path(__file__).resolve().parent.parent
PRODUCT = ("shared", "torch_impl", "tf_impl", "sftrl", "benchmarks")
NAMES = set(ALGORITHMS)


def name_comparisons(source: str) -> list[int]:
    """Lines that compare something with an algorithm's name: `x == "ppo"`, `"grpo" != x`,
    `x in ("ppo", "grpo")`, `match x: case "rloo"` (a `for a in (...)` loop is no comparison)."""
    def is_name(node):
        return isinstance(node, ast.Constant) and node.value in NAMES

    def holds_name(node):
        return is_name(node) or (isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(map(is_name, node.elts)))

    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(map(holds_name, [node.left, *node.comparators])):
            lines.append(node.lineno)
        elif isinstance(node, ast.match_case) and isinstance(node.pattern, ast.MatchValue) \
                and is_name(node.pattern.value):
            lines.append(node.pattern.lineno)
    return lines


def test_the_checker_finds_every_kind_of_comparison():
    source = ("if config.algorithm == 'ppo': pass\n"
              "x = 'grpo' != name\n"
              "y = algorithm in ('ppo', 'grpo')\n"
              "for a in ('grpo', 'rloo'): pass\n"
              "match a:\n    case 'rloo': pass\n"
              "z = kind == 'sft'\n")
    assert name_comparisons(source) == [1, 2, 3, 6]


def test_no_algorithm_name_is_compared_outside_its_record():
    found = []
    for package in PRODUCT:
        for path in sorted((REPO / package).rglob("*.py")):
            if path == REPO / "shared" / "algorithms.py":
                continue
            found += [f"{path.relative_to(REPO)}:{line}" for line in name_comparisons(path.read_text())]
    assert not found, ("an algorithm chosen by its name; read a field of its record (config.spec) instead: "
                       + ", ".join(found))


@pytest.mark.parametrize("name", sorted(NAMES))
def test_each_record_names_a_loss_in_the_three_loss_files_with_its_statistics(name):
    """Adding an algorithm is one record plus its loss in reference.py, torch_impl/losses.py and
    tf_impl/losses.py: the three have the same signature, and the NumPy one returns exactly the
    statistics the record says the trainer logs (plus loss/policy)."""
    from tf_impl import losses as tf_losses
    from torch_impl import losses as torch_losses

    spec = ALGORITHMS[name]
    functions = [getattr(module, spec.loss) for module in (ref, torch_losses, tf_losses)]
    signatures = {tuple(inspect.signature(f).parameters) for f in functions}
    assert signatures == {("logprobs", "entropy", "values", "batch", "config", "kl_coef")}

    rng = np.random.default_rng(0)
    shape = (3, 5)
    logprobs = -rng.random(shape)
    batch = SimpleNamespace(old_logprobs=logprobs + rng.normal(0, 0.2, shape),
                            ref_logprobs=logprobs + rng.normal(0, 0.2, shape), advantages=rng.normal(size=shape),
                            old_values=rng.normal(size=shape), returns=rng.normal(size=shape),
                            response_mask=np.ones(shape))
    values = rng.normal(size=shape) if spec.critic else None
    loss, stats = functions[0](logprobs, 0.5, values, batch, PPOConfig(algorithm=name), 0.05)
    assert np.isfinite(loss) and set(stats) == {"loss/policy", *spec.stats}


def test_the_config_reads_the_record():
    for name, spec in ALGORITHMS.items():
        config = PPOConfig(algorithm=name, batch_size=8, minibatch_size=4, group_size=4, ppo_epochs=3)
        assert config.spec is spec
        assert config.samples_per_prompt == (4 if spec.groups else 1)
        assert config.steps_per_rollout == ((3, 4) if spec.epochs else (1, 8))
    assert [a.name for a in ALGORITHMS.values() if a.critic] == ["ppo"]
    assert {a.name for a in ALGORITHMS.values() if a.groups} == {"grpo", "rloo"}
    assert {a.name for a in ALGORITHMS.values() if a.kl_in == "loss"} == {"grpo"}
