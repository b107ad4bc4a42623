"""One-line findings computed from a difference and its confidence interval, never written by
hand: a report's section opens with the line its numbers give.

    difference_finding("pretraining", "SFT exact match", 0.12, 0.08, 0.16)
    -> 'pretraining raised SFT exact match by +0.120 [+0.080, +0.160]'
    difference_finding("pretraining", "SFT exact match", 0.01, -0.02, 0.04)
    -> 'pretraining made no significant difference to SFT exact match: +0.010 [-0.020, +0.040]'

An interval that contains 0 is "no significant difference" at its level, whatever the sign of the
point estimate.
"""

from __future__ import annotations


def interval(diff: float, low: float, high: float, digits: int = 3) -> str:
    """'+0.120 [+0.080, +0.160]'."""
    return f"{diff:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def significant_sign(low: float, high: float) -> int:
    """+1 if the interval lies above 0, -1 if below, 0 if it contains 0."""
    if low > 0:
        return 1
    if high < 0:
        return -1
    return 0


def difference_finding(cause: str, measure: str, diff: float, low: float, high: float, digits: int = 3,
                       higher_is_better: bool = True) -> str:
    """What `cause` did to `measure`, from the paired difference (after - before) and its interval.
    higher_is_better=False (a loss, an error) words a fall as the improvement it is."""
    shown = interval(diff, low, high, digits)
    sign = significant_sign(low, high)
    if sign == 0:
        return f"{cause} made no significant difference to {measure}: {shown}"
    verb = "raised" if sign > 0 else "lowered"
    better = (sign > 0) == higher_is_better
    return f"{cause} {verb} {measure} by {shown}" + ("" if higher_is_better else
                                                     (" (better)" if better else " (worse)"))


def comparison_finding(first: str, second: str, measure: str, diff: float, low: float, high: float,
                       digits: int = 3) -> str:
    """Which of two models is better on `measure` (higher is better), from diff = second - first."""
    shown = interval(diff, low, high, digits)
    sign = significant_sign(low, high)
    if sign == 0:
        return f"no significant difference between {first} and {second} on {measure}: {shown} ({second} - {first})"
    winner, loser = (second, first) if sign > 0 else (first, second)
    return f"{winner} beat {loser} on {measure}: {shown} ({second} - {first})"
