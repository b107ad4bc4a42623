"""One-line findings computed from a difference and its confidence interval, never written by
hand: a report's section opens with the line its numbers give.

    difference_finding("pretraining", "SFT exact match", 0.12, 0.08, 0.16)
    -> 'pretraining raised SFT exact match by +0.120 [+0.080, +0.160]'
    difference_finding("pretraining", "SFT exact match", 0.01, -0.02, 0.04)
    -> 'pretraining made no significant difference to SFT exact match: +0.010 [-0.020, +0.040]'

An interval that contains 0 is "no significant difference" at its level, whatever the sign of the
point estimate.

A `Finding` carries the same line and the difference's p-value, so a report can adjust a family of
findings for multiplicity (`render_family`, Holm by default) and say which survive:

    -> '... by +0.040 [+0.005, +0.072]; p = 0.030, Holm-adjusted p = 0.210: not significant after adjustment'
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.inference import benjamini_hochberg, holm


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


def p_text(p: float, name: str = "p") -> str:
    """'p = 0.030', or 'p < 0.001' below what three decimals show."""
    return f"{name} < 0.001" if p < 0.001 else f"{name} = {p:.3f}"


@dataclass(frozen=True)
class Finding:
    """A finding line (difference_finding / comparison_finding, from the interval) and the p-value of
    the same difference when known. render() without a p is the line unchanged."""
    text: str
    p: float | None = None

    @classmethod
    def of_difference(cls, cause: str, measure: str, estimate, digits: int = 3, higher_is_better: bool = True):
        """From an Estimate (or any (diff, low, high) with an optional .p) of after - before."""
        return cls(difference_finding(cause, measure, *estimate, digits=digits, higher_is_better=higher_is_better),
                   getattr(estimate, "p", None))

    @classmethod
    def of_comparison(cls, first: str, second: str, measure: str, estimate, digits: int = 3):
        """From an Estimate of second - first."""
        return cls(comparison_finding(first, second, measure, *estimate, digits=digits), getattr(estimate, "p", None))

    def render(self, adjusted_p: float | None = None, adjustment: str = "Holm", alpha: float = 0.05) -> str:
        if self.p is None:
            return self.text
        line = f"{self.text}; {p_text(self.p)}"
        if adjusted_p is None:
            return line
        verdict = "significant" if adjusted_p <= alpha else "not significant"
        return f"{line}, {p_text(adjusted_p, f'{adjustment}-adjusted p')}: {verdict} after adjustment"

    def __str__(self):
        return self.render()


ADJUSTMENTS = {"holm": ("Holm", holm), "bh": ("BH", benjamini_hochberg)}


def render_family(findings, method: str = "holm", alpha: float = 0.05) -> list[str]:
    """The lines of a family of findings, each p adjusted over the findings that have one (Holm:
    family-wise error rate; "bh": Benjamini-Hochberg false discovery rate). Plain strings and
    findings without a p pass through unchanged."""
    name, adjust = ADJUSTMENTS[method]
    adjusted = adjust([f.p if isinstance(f, Finding) else None for f in findings])
    return [f.render(a, name, alpha) if isinstance(f, Finding) else f for f, a in zip(findings, adjusted)]
