"""Human evaluation as InstructGPT-style pairwise preference, in three steps:

    export  blind, randomly ordered A/B pairs of two models' completions (pairs.jsonl, a printable
            HTML sheet); which model is A is kept apart, in unblinding-key.json
    rate    a rater answers in the terminal (A / B / tie, optional 1-5 scores); every answer is
            appended to ratings.jsonl and flushed to disk at once, so a rater can stop and resume
    score   unblind; win/tie/loss shares with 95% intervals from a bootstrap over pairs (each pair's
            ratings averaged first: raters of one pair are not independent draws); agreement
            between raters (Cohen's kappa for two, Fleiss' kappa for more)
"""

from __future__ import annotations

import html
import json
import os
import random
from pathlib import Path

from shared.errors import SftrlError
from shared.io import atomic_write_text
from shared.inference import pair_shares
from shared.metrics import cohens_kappa, fleiss_kappa

CHOICES = {"a": "A", "b": "B", "t": "tie"}
SCORE_FIELDS = ("fluency_A", "correctness_A", "fluency_B", "correctness_B")


# ----------------------------------------------------------------------------- export

def make_pairs(prompts, completions_first, completions_second, names, seed=0):
    """Blind pairs (A/B order drawn per prompt) and the key that unblinds them."""
    rng = random.Random(seed)
    pairs, key = [], {}
    for i, (prompt, first, second) in enumerate(zip(prompts, completions_first, completions_second)):
        pair_id = f"p{i:04d}"
        if rng.random() < 0.5:
            pairs.append({"id": pair_id, "prompt": prompt, "A": first, "B": second})
            key[pair_id] = {"A": names[0], "B": names[1]}
        else:
            pairs.append({"id": pair_id, "prompt": prompt, "A": second, "B": first})
            key[pair_id] = {"A": names[1], "B": names[0]}
    return pairs, {"models": list(names), "pairs": key}


def sheet_html(pairs) -> str:
    """A printable rating sheet. Every prompt and completion is HTML-escaped: model text is data."""
    e = lambda text: html.escape(text, quote=True)  # noqa: E731
    rows = "\n".join(
        f"<tr><td>{e(p['id'])}</td><td><pre>{e(p['prompt'])}</pre></td><td><pre>{e(p['A'])}</pre></td>"
        f"<td><pre>{e(p['B'])}</pre></td><td>A &#9744; B &#9744; tie &#9744;</td></tr>" for p in pairs)
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>sftrl human evaluation</title>"
            "<style>table{border-collapse:collapse}td,th{border:1px solid #999;padding:4px;vertical-align:top}"
            "pre{white-space:pre-wrap;margin:0}</style></head><body>\n<h1>Which completion is better?</h1>\n"
            "<table><tr><th>id</th><th>prompt</th><th>A</th><th>B</th><th>better</th></tr>\n"
            f"{rows}\n</table></body></html>\n")


def export(pairs, key, out_dir):
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "pairs.jsonl", "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    atomic_write_text(out_dir / "sheet.html", sheet_html(pairs))
    atomic_write_text(out_dir / "unblinding-key.json", json.dumps(key, indent=2) + "\n")


def load_pairs(directory):
    path = Path(directory) / "pairs.jsonl"
    if not path.exists():
        raise SftrlError(f"{directory}: no pairs.jsonl (make one with `sftrl human-eval export`)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_ratings(directory):
    path = Path(directory) / "ratings.jsonl"
    if not path.exists():
        return []
    ratings = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            ratings.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash while it was being written: that answer is asked again
    return ratings


# ----------------------------------------------------------------------------- rate

def append_durably(path, record):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


STOP = "q"


def ask_choice(read) -> str:
    """a, b, t or q (end of input counts as q)."""
    answer = ""
    while answer not in CHOICES and answer != STOP:
        try:
            answer = read("Which is better? [a/b/t/q] ").strip().lower()
        except EOFError:
            return STOP
    return answer


def ask_scores(read, write) -> tuple[dict, str | None]:
    """The optional 1-5 scores. Returns (scores, what comes next): None to go on, "q" to stop
    (q or end of input), or a/b/t -- an answer for the next pair typed here, which skips the
    scores of this one."""
    while True:
        try:
            text = read("Optional 1-5 scores: fluency A, correctness A, fluency B, correctness B "
                        "(Enter to skip, q to stop) ").strip()
        except EOFError:
            return {}, STOP
        parts = text.replace(",", " ").split()
        if not parts:
            return {}, None
        if len(parts) == 1 and parts[0].lower() in (*CHOICES, STOP):
            if parts[0].lower() != STOP:
                write(f"  (no scores for this pair; {parts[0].lower()!r} taken as the answer for the next one)")
            return {}, parts[0].lower()
        if len(parts) == 4 and all(p in "12345" and len(p) == 1 for p in parts):
            return dict(zip(SCORE_FIELDS, map(int, parts))), None
        write("  four numbers from 1 to 5, nothing to skip, or q to stop")


def rate(directory, rater, read=input, write=print):
    """Ask about every pair this rater has not rated yet. 'q' (or end of input) stops at either
    prompt; each pair's answer is saved (durably) as soon as it is complete, and an answer cut
    short at the scores prompt is saved without scores."""
    if not rater.strip():
        raise SftrlError("--rater: give a non-empty name")
    pairs = load_pairs(directory)
    done = {r["id"] for r in load_ratings(directory) if r["rater"] == rater}
    todo = [p for p in pairs if p["id"] not in done]
    write(f"{len(done)} of {len(pairs)} pairs rated by {rater}; {len(todo)} to go. Answer a, b, t(ie), or q to stop.")
    rated, ahead = len(done), None  # ahead: an answer typed at the scores prompt, for the next pair
    for pair in todo:
        write(f"\n[{rated + 1}/{len(pairs)}] {pair['id']}\nPROMPT: {pair['prompt']}\n  A: {pair['A']}\n  B: {pair['B']}")
        answer, ahead = ahead or ask_choice(read), None
        if answer != STOP:
            scores, ahead = ask_scores(read, write)
            append_durably(Path(directory) / "ratings.jsonl", {"id": pair["id"], "rater": rater,
                                                                "choice": CHOICES[answer], **scores})
            rated += 1
        if STOP in (answer, ahead):
            write(f"stopped: {rated} of {len(pairs)} rated by {rater}; run the same command to continue.")
            return rated
    write(f"done: all {len(pairs)} pairs rated by {rater}.")
    return len(pairs)


# ----------------------------------------------------------------------------- score

def score(directory):
    """Unblinded win/tie/loss shares of each model, and inter-rater agreement. A share is the mean
    over rated pairs of the pair's share among its ratings; its interval is a bootstrap over pairs
    (`shared.inference.pair_shares`), so a second rater narrows it only as far as they disagree."""
    key_path = Path(directory) / "unblinding-key.json"
    if not key_path.exists():
        raise SftrlError(f"{directory}: no unblinding-key.json")
    key = json.loads(key_path.read_text())
    ratings = [r for r in load_ratings(directory) if r["id"] in key["pairs"]]
    if not ratings:
        raise SftrlError(f"{directory}: no ratings yet (collect some with `sftrl human-eval rate`)")
    first, second = key["models"]
    outcomes = {m: {} for m in key["models"]}       # model -> pair id -> its outcome in each rating
    sums = {m: {"fluency": [], "correctness": []} for m in key["models"]}
    for r in ratings:
        winner = None if r["choice"] == "tie" else key["pairs"][r["id"]][r["choice"]]
        for m in key["models"]:
            outcomes[m].setdefault(r["id"], []).append("tie" if winner is None else "win" if winner == m else "loss")
        for side in ("A", "B"):
            model = key["pairs"][r["id"]][side]
            for aspect in ("fluency", "correctness"):
                if f"{aspect}_{side}" in r:
                    sums[model][aspect].append(r[f"{aspect}_{side}"])
    result = {"ratings": len(ratings), "pairs": len(outcomes[first]), "raters": sorted({r["rater"] for r in ratings}),
              "intervals": "95% percentile bootstrap over pairs, each pair's ratings averaged first", "models": {}}
    for model in (first, second):
        shares = pair_shares(outcomes[model])       # the same seed for both: one's win interval is the other's loss
        result["models"][model] = {
            **{k: v for o in ("win", "tie", "loss") for k, v in ((o, shares[o][0]), (f"{o}_ci95", list(shares[o][1:])))},
            **{f"mean_{a}": (sum(v) / len(v) if v else None) for a, v in sums[model].items()}}
    by_rater = {}
    for r in ratings:
        by_rater.setdefault(r["rater"], {})[r["id"]] = r["choice"]
    raters = sorted(by_rater)
    common = sorted(set.intersection(*(set(v) for v in by_rater.values()))) if raters else []
    if len(raters) == 2 and common:
        result["agreement"] = {"cohens_kappa": cohens_kappa([by_rater[raters[0]][i] for i in common],
                                                            [by_rater[raters[1]][i] for i in common]),
                               "items": len(common)}
    elif len(raters) > 2 and common:
        table = [[sum(by_rater[r][i] == c for r in raters) for c in ("A", "B", "tie")] for i in common]
        result["agreement"] = {"fleiss_kappa": fleiss_kappa(table), "items": len(common)}
    atomic_write_text(Path(directory) / "score.json", json.dumps(result, indent=2) + "\n")
    return result


def format_score(result) -> str:
    pairs = f" of {result['pairs']} pairs" if "pairs" in result else ""   # a score.json from before pairs counted
    lines = [f"{result['ratings']} ratings{pairs} by {len(result['raters'])} rater(s): {', '.join(result['raters'])}"
             + (f" (intervals: {result['intervals']})" if "intervals" in result else ""), "",
             "| model | win [95% CI] | tie | loss [95% CI] | fluency | correctness |", "| --- | --- | --- | --- | ---: | ---: |"]
    fmt = lambda x: "–" if x is None else f"{x:.2f}"  # noqa: E731
    for model, s in result["models"].items():
        lines.append(f"| {model} | {s['win']:.2f} [{s['win_ci95'][0]:.2f}, {s['win_ci95'][1]:.2f}] | {s['tie']:.2f} | "
                     f"{s['loss']:.2f} [{s['loss_ci95'][0]:.2f}, {s['loss_ci95'][1]:.2f}] | {fmt(s['mean_fluency'])} | "
                     f"{fmt(s['mean_correctness'])} |")
    if "agreement" in result:
        a = result["agreement"]
        name = "Cohen's kappa" if "cohens_kappa" in a else "Fleiss' kappa"
        lines += ["", f"agreement: {name} = {a.get('cohens_kappa', a.get('fleiss_kappa')):.3f} on {a['items']} common pairs"]
    return "\n".join(lines)
