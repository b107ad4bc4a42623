"""The time a pipeline or a study has left, for its progress lines: each stage's estimate, scaled by
the pace of the stages that finished (the lines say it with `shared.progress.duration`)."""

from __future__ import annotations


def time_left(estimates: dict, finished: dict) -> float:
    """Seconds the unfinished stages should take: their estimates times the pace of the finished
    ones (seconds taken / estimated, held within [0.25, 4]; 1 before any stage has finished).
    Stages estimated under 5 s do not set the pace: a second's noise would be a factor there."""
    paced = [name for name in finished if estimates[name] >= 5]
    estimated = sum(estimates[name] for name in paced)
    pace = min(max(sum(finished[name] for name in paced) / estimated, 0.25), 4.0) if estimated > 0 else 1.0
    return pace * sum(seconds for name, seconds in estimates.items() if name not in finished)

