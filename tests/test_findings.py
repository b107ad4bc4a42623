"""Finding lines follow the numbers: flip the sign of a difference and the finding flips."""

import pytest

from shared.findings import comparison_finding, difference_finding, significant_sign


@pytest.mark.parametrize("diff, low, high, expected", [
    (0.12, 0.08, 0.16, "pretraining raised SFT exact match by +0.120 [+0.080, +0.160]"),
    (-0.12, -0.16, -0.08, "pretraining lowered SFT exact match by -0.120 [-0.160, -0.080]"),
    (0.01, -0.02, 0.04, "pretraining made no significant difference to SFT exact match: +0.010 [-0.020, +0.040]"),
    (-0.01, -0.04, 0.02, "pretraining made no significant difference to SFT exact match: -0.010 [-0.040, +0.020]"),
    (0.03, 0.0, 0.06, "pretraining made no significant difference to SFT exact match: +0.030 [+0.000, +0.060]"),
])
def test_difference_finding_follows_the_interval(diff, low, high, expected):
    assert difference_finding("pretraining", "SFT exact match", diff, low, high) == expected


def test_flipping_the_sign_flips_the_finding():
    up = comparison_finding("SFT", "RL", "exact match", 0.04, 0.005, 0.072)
    down = comparison_finding("SFT", "RL", "exact match", -0.04, -0.072, -0.005)
    assert up == "RL beat SFT on exact match: +0.040 [+0.005, +0.072] (RL - SFT)"
    assert down == "SFT beat RL on exact match: -0.040 [-0.072, -0.005] (RL - SFT)"
    assert comparison_finding("SFT", "RL", "exact match", 0.0, -0.025, 0.025).startswith("no significant difference")


def test_a_lower_is_better_measure_is_worded_as_better_or_worse():
    assert difference_finding("pretraining", "SFT held-out loss", -0.3, -0.4, -0.2, higher_is_better=False) == \
        "pretraining lowered SFT held-out loss by -0.300 [-0.400, -0.200] (better)"
    assert difference_finding("pretraining", "SFT held-out loss", 0.3, 0.2, 0.4, higher_is_better=False).endswith(
        "(worse)")
    assert [significant_sign(*i) for i in ((0.1, 0.2), (-0.2, -0.1), (-0.1, 0.1))] == [1, -1, 0]
