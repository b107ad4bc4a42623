"""Finding lines follow the numbers: flip the sign of a difference and the finding flips."""

import pytest

from shared.findings import Finding, comparison_finding, difference_finding, render_family, significant_sign
from shared.inference import Estimate


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


def test_a_finding_without_p_is_todays_line():
    estimate = (0.04, 0.005, 0.072)
    assert Finding.of_comparison("SFT", "RL", "exact match", estimate).render() == \
        comparison_finding("SFT", "RL", "exact match", *estimate)
    assert str(Finding.of_difference("pretraining", "SFT exact match", (0.12, 0.08, 0.16))) == \
        "pretraining raised SFT exact match by +0.120 [+0.080, +0.160]"


def test_a_finding_renders_raw_and_adjusted_verdicts():
    e = Estimate(0.04, 0.005, 0.072, 0.03, "paired bootstrap over prompts; sign-flip permutation p")
    f = Finding.of_comparison("SFT", "RL", "exact match", e)
    assert f.render() == "RL beat SFT on exact match: +0.040 [+0.005, +0.072] (RL - SFT); p = 0.030"
    assert f.render(adjusted_p=0.21) == ("RL beat SFT on exact match: +0.040 [+0.005, +0.072] (RL - SFT); "
                                         "p = 0.030, Holm-adjusted p = 0.210: not significant after adjustment")
    assert f.render(adjusted_p=0.0004).endswith("Holm-adjusted p < 0.001: significant after adjustment")
    loss = Finding.of_difference("pretraining", "loss", Estimate(-0.3, -0.4, -0.2, 0.0005, ""), higher_is_better=False)
    assert loss.render() == "pretraining lowered loss by -0.300 [-0.400, -0.200] (better); p < 0.001"


def test_a_family_is_adjusted_over_the_findings_with_a_p():
    """Seven findings: Holm turns the raw p = 0.03 (3rd smallest) into 5 x 0.03 = 0.15."""
    ps = [0.03, 0.2, 0.6, 0.001, 0.4, 0.01, 0.8]
    family = [Finding.of_difference(f"change {i}", "exact match", Estimate(0.1, 0.01, 0.2, p, "")) for i, p in enumerate(ps)]
    lines = render_family(family[:3] + ["a line without numbers"] + family[3:])
    assert lines[0].endswith("; p = 0.030, Holm-adjusted p = 0.150: not significant after adjustment")
    assert lines[3] == "a line without numbers"
    assert lines[4].endswith("p = 0.001, Holm-adjusted p = 0.007: significant after adjustment")
    assert render_family(family, "bh")[0].endswith("BH-adjusted p = 0.070: not significant after adjustment")
