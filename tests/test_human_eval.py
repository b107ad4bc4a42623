"""Human evaluation: blind export, terminal rating with stop/resume, scoring, HTML escaping."""

import json

import pytest

from conftest import REPO, run_cli
from sftrl.reports import human_eval
from shared.metrics import wilson_interval

import os
import subprocess
import sys


def make_export(tmp_path, n=4):
    prompts = [f"copy: {c}" for c in "abcdefgh"[:n]]
    first = [f"first {i} <script>alert(1)</script>" for i in range(n)]
    second = [f'second {i} "><img src=x onerror=alert(1)>' for i in range(n)]
    pairs, key = human_eval.make_pairs(prompts, first, second, ["sft", "rl"], seed=3)
    human_eval.export(pairs, key, tmp_path)
    return pairs, key


def rate(tmp_path, rater, answers):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "sftrl", "human-eval", "rate", str(tmp_path), "--rater", rater],
                          input=answers, capture_output=True, text=True, env=env, timeout=60)


def test_export_is_blind_and_escaped(tmp_path):
    pairs, key = make_export(tmp_path, n=8)
    order = [key["pairs"][p["id"]]["A"] for p in pairs]
    assert set(order) == {"sft", "rl"}  # both orders occur: the position says nothing
    for p in pairs:
        assert "sft" not in json.dumps(p) and "rl" not in p["id"]
        a_model = key["pairs"][p["id"]]["A"]
        assert p["A"].startswith("first" if a_model == "sft" else "second")
    sheet = (tmp_path / "sheet.html").read_text()
    assert "<script>alert" not in sheet and "&lt;script&gt;alert(1)&lt;/script&gt;" in sheet
    assert '"><img' not in sheet and "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in sheet
    assert not (tmp_path / "ratings.jsonl").exists()


def test_rating_stops_resumes_and_scores(tmp_path):
    pairs, key = make_export(tmp_path, n=4)
    # rater ann: two answers (one with scores, one after an invalid key), then q
    result = rate(tmp_path, "ann", "a\n5 4 3 2\nx\nb\n\nq\n")
    assert result.returncode == 0, result.stderr
    assert "stopped: 2 of 4 rated by ann; run the same command to continue." in result.stdout
    ratings = [json.loads(l) for l in (tmp_path / "ratings.jsonl").read_text().splitlines()]
    assert [r["choice"] for r in ratings] == ["A", "B"]
    assert ratings[0]["fluency_A"] == 5 and ratings[0]["correctness_B"] == 2 and "fluency_A" not in ratings[1]
    # ann resumes with pair 3; end of input also stops cleanly
    result = rate(tmp_path, "ann", "t\n\n")
    assert "2 of 4 pairs rated by ann; 2 to go" in result.stdout and "[3/4] p0002" in result.stdout
    result = rate(tmp_path, "ann", "a\n\n")
    assert "done: all 4 pairs rated by ann." in result.stdout
    # bob rates everything the same way as ann except the last pair
    rate(tmp_path, "bob", "a\n\nb\n\nt\n\nb\n\n")
    result = run_cli("human-eval", "score", tmp_path)
    assert result.returncode == 0, result.stderr
    score = json.loads((tmp_path / "score.json").read_text())
    assert score["ratings"] == 8 and score["raters"] == ["ann", "bob"]
    # unblind by hand: A/B answers -> models
    expected_wins = {"sft": 0, "rl": 0}
    for r in [json.loads(l) for l in (tmp_path / "ratings.jsonl").read_text().splitlines()]:
        if r["choice"] != "tie":
            expected_wins[key["pairs"][r["id"]][r["choice"]]] += 1
    for model in ("sft", "rl"):
        assert score["models"][model]["win"] == pytest.approx(expected_wins[model] / 8)
        assert score["models"][model]["tie"] == pytest.approx(2 / 8)
    # ann: A B t A, bob: A B t B -> p_o = 3/4, p_e = (2/4)(1/4) + (1/4)(2/4) + (1/4)(1/4) = 5/16
    assert score["agreement"]["cohens_kappa"] == pytest.approx((3 / 4 - 5 / 16) / (1 - 5 / 16))
    assert "Cohen's kappa" in result.stdout


@pytest.mark.parametrize("answers, saved, stopped", [
    ("a\nq\n", ["A"], 1),                  # q at the scores prompt: the answer is kept, then stop
    ("a\nb\n\nq\n", ["A", "B"], 2),        # 'b' at the scores prompt: no scores, b is the next pair's answer
    ("a\nt\nq\n", ["A", "tie"], 2),         # ... and q at the next scores prompt stops there
    ("b\n5 5 4 4\nq\n", ["B"], 1),          # scores, then q at the next choice prompt
    ("a\n", ["A"], 1),                      # end of piped input at the scores prompt keeps the answer
    ("a\n7 7\nq\n", ["A"], 1),              # a wrong score line asks again; q then stops
])
def test_q_stops_at_every_prompt_and_each_answer_is_saved_as_given(tmp_path, answers, saved, stopped):
    """As a new user types: `q`, or an answer meant for the next pair, at the optional scores
    prompt; piped answers. No prompt loops on them, no given answer is lost."""
    make_export(tmp_path, n=4)
    result = rate(tmp_path, "ann", answers)
    assert result.returncode == 0, result.stderr
    assert f"stopped: {stopped} of 4 rated by ann; run the same command to continue." in result.stdout
    ratings = [json.loads(line) for line in (tmp_path / "ratings.jsonl").read_text().splitlines()]
    assert [r["choice"] for r in ratings] == saved
    if answers.startswith("b\n5"):
        assert ratings[0]["fluency_A"] == 5 and ratings[0]["correctness_B"] == 4
    assert result.stdout.count("four numbers from 1 to 5") == answers.count("7 7")


def test_score_without_ratings_is_a_clear_error(tmp_path):
    make_export(tmp_path)
    result = run_cli("human-eval", "score", tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path}: no ratings yet (collect some with `sftrl human-eval rate`)"


def rate_all(tmp_path, pairs, key, rater, prefer):
    """`rater` answers every pair for model `prefer` (None: tie), as `rate` would save it."""
    for pair in pairs:
        choice = "tie" if prefer is None else ("A" if key["pairs"][pair["id"]]["A"] == prefer else "B")
        human_eval.append_durably(tmp_path / "ratings.jsonl", {"id": pair["id"], "rater": rater, "choice": choice})


def test_score_intervals_count_pairs_not_ratings(tmp_path):
    """A second rater who agrees on every pair adds ratings, not pairs: the shares and their intervals
    stay those of one rater (a Wilson interval over the doubled ratings would have narrowed)."""
    pairs, key = make_export(tmp_path, n=8)
    half = len(pairs) // 2
    rate_all(tmp_path, pairs[:half], key, "ann", "rl")
    rate_all(tmp_path, pairs[half:], key, "ann", "sft")
    one = human_eval.score(tmp_path)
    rate_all(tmp_path, pairs[:half], key, "bob", "rl")
    rate_all(tmp_path, pairs[half:], key, "bob", "sft")
    two = human_eval.score(tmp_path)
    assert (one["ratings"], one["pairs"], two["ratings"], two["pairs"]) == (8, 8, 16, 8)
    assert two["models"] == one["models"] and "bootstrap over pairs" in two["intervals"]
    rl = two["models"]["rl"]
    assert set(rl) == {"win", "win_ci95", "tie", "tie_ci95", "loss", "loss_ci95", "mean_fluency", "mean_correctness"}
    assert rl["win"] == 0.5 and rl["win_ci95"] == two["models"]["sft"]["loss_ci95"]   # one bootstrap, seen from both sides
    low, high = rl["win_ci95"]
    assert high - low > 0.4                      # 8 pairs: about 2 x 1.96 x sqrt(0.25 / 8) = 0.69 wide
    wilson_low, wilson_high = wilson_interval(8, 16)
    assert high - low > (wilson_high - wilson_low) * 1.2
    assert rl["tie_ci95"] == pytest.approx(list(wilson_interval(0, 8)))   # no tie anywhere: Wilson over 8 pairs
    assert "16 ratings of 8 pairs by 2 rater(s)" in human_eval.format_score(two)
