"""`sftrl pipeline --preset study`: the plan, the runner (failure, interrupt, resume), each
section's numbers and findings against the files they are computed from, and (slow) the whole
study at its tiny size."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from shared.errors import SftrlError
from shared.findings import Finding, interval, render_family
from shared.inference import overoptimisation_test, paired_test, seed_prompt_test
from shared.random_streams import generator
from shared.interrupt import EXIT_INTERRUPTED
from shared.tasks import TASKS, make_builtin_data, solve, task_scores
from sftrl.pipeline import study
from sftrl.reports import study as study_report


def argv_of(runs, name, out):
    return [str(a) for a in next(r for r in runs if r.name == name).argv(out)]


def test_the_plan_runs_what_each_section_compares(tmp_path):
    """Each comparison differs in the one thing it measures."""
    runs = study.plan(study.SIZES["full"])
    names = [r.name for r in runs]
    assert len(names) == len(set(names))
    out = tmp_path
    scratch, sft = argv_of(runs, "sft_scratch", out), argv_of(runs, "sft", out)
    assert "--init" not in scratch and scratch[scratch.index("--tokenizer") + 1] == str(out / "pretrain" / "tokenizer.json")
    assert scratch[scratch.index("--model-config") + 1] == str(out / "pretrain" / "config.json")
    assert sft[sft.index("--init") + 1] == str(out / "pretrain")
    # clean and contaminated pretraining differ only in their text
    clean, dirty = argv_of(runs, "pretrain", out), argv_of(runs, "pretrain_contaminated", out)
    assert [a for a in clean if "text" not in a and "pretrain" not in a] == \
        [a for a in dirty if "text" not in a and "pretrain" not in a][:-1]
    assert dirty[-2:] == ["--tokenizer", str(out / "pretrain" / "tokenizer.json")]  # one tokenizer for both
    assert clean[clean.index("--data") + 1] == str(out / "data" / "text.train.jsonl")
    assert dirty[dirty.index("--data") + 1] == str(out / "data" / "text_contaminated.train.jsonl")
    contaminated = argv_of(runs, "sft_contaminated", out)
    assert contaminated[contaminated.index("--init") + 1] == str(out / "pretrain_contaminated")
    assert contaminated[:contaminated.index("--init")] == sft[:sft.index("--init")]
    for rank in study.LORA_RANKS:  # LoRA's own defaults (lr, alpha, targets): only the rank is given
        lora = argv_of(runs, f"sft_lora_r{rank}", out)
        assert lora[-2:] == ["--lora-rank", str(rank)] and "--lr" not in lora
    for task in TASKS:
        assert argv_of(runs, f"sft_task_{task}", out)[-2:] == ["--tasks", task]
    (out / "sft_compute").mkdir()
    (out / "sft_compute" / "trainer_state.json").write_text(json.dumps({"step": 1860}))
    labels = argv_of(runs, "sft_labels", out)  # every RL prompt labelled, at the RL model's FLOPs' steps
    assert str(out / "data" / "sft.rl_prompts.jsonl") in labels and labels[-2:] == ["--steps", "1860"]
    assert names.index("sft_labels") > names.index("sft_compute")
    low = argv_of(runs, "rl_rm_beta_low", out)
    assert f"model:{out / 'reward_model'}" in low and low[low.index("--kl-coef") + 1] == "0.005"
    assert argv_of(runs, "rl_reward_exact", out)[-1] == "task-exact"
    # every algorithm and DPO once per seed, from that seed's SFT model, with one declared setting
    for k in (0, 1, 2):
        suffix = f"_seed{k}" if k else ""
        for algorithm, (flags, _) in study.FAMILY.items():
            argv = argv_of(runs, f"rl_{algorithm}{suffix}", out)
            assert argv[argv.index("--seed") + 1] == str(k) and argv[2] == str(out / f"sft{suffix}")
            assert argv[argv.index("--seed") + 2:] == flags  # the same flags for every seed
        dpo = argv_of(runs, f"dpo{suffix}", out)
        assert dpo[dpo.index("--policy") + 1] == str(out / f"sft{suffix}") and dpo[dpo.index("--seed") + 1] == str(k)
    evaluated = argv_of(runs, "eval", out)
    models = [evaluated[i + 1] for i, a in enumerate(evaluated) if a == "--model"]
    assert models[0] == str(out / "sft")  # the baseline of KL
    assert {Path(m).name for m in models} == {n for n in names if n.startswith(("sft", "rl_", "dpo"))}
    # each run comes after the runs it reads
    order = {n: i for i, n in enumerate(names)}
    for r in (r for r in runs if r.name not in ("sft_compute", "sft_labels", "human_eval")):  # (these read runs)
        for a in r.argv(out):
            if isinstance(a, Path) and a.parent == out and a.name in order and a.name != r.name:
                assert order[a.name] < order[r.name], (r.name, a.name)
    # the estimates add up to the budget: 30 minutes on 2 cores
    size = study.SIZES["full"]
    assert sum(size.seconds[r.kind] for r in runs) + size.seconds["data"] + size.seconds["report"] <= 30 * 60


class FakeRuns:
    """run_command for the runner's tests: records argv, writes the file that marks a run done,
    and returns `codes[name]` (0 by default) -- a failure leaves a checkpoint folder behind."""

    def __init__(self, out, codes=None):
        self.out, self.codes, self.calls = Path(out), codes or {}, []

    def __call__(self, argv):
        self.calls.append(argv)
        folder = Path(argv[argv.index("--out") + 1]) if "--out" in argv else None
        name = folder.name
        code = self.codes.get(name, 0)
        folder.mkdir(parents=True, exist_ok=True)
        if code:
            (folder / "checkpoints").mkdir(exist_ok=True)
            return code
        done = {"eval": "eval.json", "human_eval": "pairs.jsonl"}.get(name, "trainer_state.json")
        (folder / done).write_text(json.dumps({"train_seconds": 1.0, "step": 10}))
        return 0


def test_sft_given_the_rl_models_flops_counts_its_sft_and_its_rl_run(tmp_path, monkeypatch):
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "trainer_state.json").write_text(json.dumps({"step": 600}))
    flops = {"sft": 3.0e12, "rl_ppo": 6.3e12}
    monkeypatch.setattr(study_report, "run_flops", lambda out, name: flops[name])
    assert study.compute_matched_steps(tmp_path) == round(600 * (3.0 + 6.3) / 3.0) == 1860
    flops["rl_ppo"] = 0.0  # a run whose FLOPs cannot be counted is an error, not a guess
    with pytest.raises(SftrlError, match="cannot count the FLOPs of rl_ppo"):
        study.compute_matched_steps(tmp_path)


def test_the_human_eval_model_is_chosen_on_prompts_off_the_sheet(tmp_path):
    """rl_grpo is perfect on the sheet's prompts only, rl_rloo on the others: rl_rloo is chosen."""
    prompts = [r["prompt"] for r in PROMPTS]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prompt.eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PROMPTS))
    sheet = 10
    completions = {str(tmp_path / "sft"): ["zz"] * len(prompts),
                   str(tmp_path / "rl_grpo"): [solve(p) if i < sheet else "zz" for i, p in enumerate(prompts)],
                   str(tmp_path / "rl_rloo"): [solve(p) if i in (sheet, sheet + 1) else "zz" for i, p in enumerate(prompts)],
                   str(tmp_path / "rl_ppo_seed1"): [solve(p) for p in prompts]}  # not seed 0: not a candidate
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "eval.json").write_text(json.dumps({"models": [], "completions": completions}))
    assert study.best_rl_model(tmp_path, sheet) == "rl_rloo"
    assert study.best_rl_model(tmp_path, 0) == "rl_grpo"  # on every prompt, the sheet's lucky model would win


def test_a_failed_run_leaves_the_report_of_what_finished_and_the_command_that_resumes(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(study, "compute_matched_steps", lambda out: 9)  # the fake runs write no model to count
    out = tmp_path / "study"
    fake = FakeRuns(out, {"rl_ppo": 2})
    with pytest.raises(SftrlError) as failure:
        study.run(out, fake, size="tiny", quiet=True, log=lambda *a: None)
    message = str(failure.value)
    assert message.startswith("study run `rl_ppo` failed (exit code 2)")
    assert message.endswith(f"run: sftrl pipeline --preset study --out {out} --size tiny --resume")
    report = (out / "report.md").read_text()
    assert "**Incomplete:** the study stopped in run `rl_ppo`" in report
    assert "Not run yet:" in report and "`rl_ppo`" in report
    finished = json.loads((out / "stage_seconds.json").read_text())
    assert list(finished)[-1] == "reward_model" and "rl_ppo" not in finished  # what finished, in order
    # the same command again is refused; --resume skips what finished and resumes the failed run
    with pytest.raises(SftrlError, match="already holds a study; add --resume"):
        study.run(out, FakeRuns(out), size="tiny", log=lambda *a: None)
    again = FakeRuns(out, {"sft_seed1": EXIT_INTERRUPTED})
    with pytest.raises(SystemExit) as stop:
        study.run(out, again, size="tiny", quiet=True, resume=True, log=lambda *a: None)
    assert stop.value.code == EXIT_INTERRUPTED
    assert [a[a.index("--out") + 1].split("/")[-1] for a in again.calls] == [
        "rl_ppo", "sft_compute", "sft_labels", "rl_grpo", "rl_rloo", "rl_reinforce", "dpo", "sft_seed1"]
    assert again.calls[0][-1] == "--resume" and "--resume" not in again.calls[1]
    compute = again.calls[1]
    assert [compute[i + 1] for i, a in enumerate(compute) if a == "--steps"][-1] == "9"  # the last --steps wins
    assert "to finish the study run: sftrl pipeline --preset study" in capsys.readouterr().err
    with pytest.raises(SftrlError, match="--resume: .* holds no study to resume"):
        study.run(tmp_path / "empty", FakeRuns(tmp_path / "empty"), size="tiny", resume=True)


# ----------------------------------------------------------------------------- sections from files

PROMPTS = make_builtin_data(seed=3, sizes={"prompt.eval": 40})["prompt.eval"]


def write_eval(out, right_counts: dict):
    """eval/eval.json as `sftrl eval` writes it: model `name` answers the first right_counts[name]
    prompts right and the rest wrong; rows computed from the completions."""
    prompts = [r["prompt"] for r in PROMPTS]
    rows, completions = [], {}
    for name, right in right_counts.items():
        texts = [solve(p) if i < right else "zz" for i, p in enumerate(prompts)]
        exact, partial = task_scores(prompts, texts)
        row = {"model": str(out / name), "exact_match": float(np.mean(exact)), "partial_credit": float(np.mean(partial)),
               "sequence_kl_to_first": {"mean": 0.5, "ci95": [0.4, 0.6]}}
        for task in TASKS:
            chosen = [i for i, r in enumerate(PROMPTS) if r["task"] == task]
            row[f"{task}/exact_match"] = float(np.mean([exact[i] for i in chosen]))
        rows.append(row)
        completions[str(out / name)] = texts
    (out / "eval").mkdir(parents=True, exist_ok=True)
    (out / "eval" / "eval.json").write_text(json.dumps({"models": rows, "completions": completions}))


@pytest.fixture
def files(tmp_path):
    out = tmp_path / "study"
    (out / "data").mkdir(parents=True)
    (out / "data" / "prompt.eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PROMPTS))
    (out / "data" / "sft.train.jsonl").write_text("{}\n" * 8)          # 8 labelled examples
    (out / "data" / "sft.rl_prompts.jsonl").write_text("{}\n" * len(PROMPTS))
    (out / "sft").mkdir()
    (out / "sft" / "trainer_state.json").write_text(json.dumps({"step": 600}))
    return out


def test_each_finding_follows_its_numbers_and_flips_with_them(files):
    """The main comparison, reward design and the same-FLOPs rows read eval.json: the report's
    numbers are the tests of its completions (over seeds and prompts where the runs have seeds), and
    swapping two models' completions flips the finding."""
    counts = {"sft": 10, "rl_ppo": 30, "sft_seed1": 12, "rl_ppo_seed1": 31, "sft_seed2": 8, "rl_ppo_seed2": 29,
              "rl_reward_partial": 25, "rl_reward_exact": 15, "rl_reward_model": 15, "sft_compute": 12, "sft_labels": 38}
    write_eval(files, counts)
    st = study_report.Study(files)
    main = study_report.main_comparison(st, (0, 1, 2))
    scores = lambda *names: np.stack([st.scores(n, "exact_match") for n in names])  # noqa: E731
    expected = seed_prompt_test(scores("sft", "sft_seed1", "sft_seed2"), scores("rl_ppo", "rl_ppo_seed1", "rl_ppo_seed2"))
    assert expected.diff == pytest.approx((20 + 19 + 21) / 3 / 40) and expected.low > 0 and "crossed" in expected.method
    assert main.findings[0] == Finding.of_comparison("SFT", "RL (PPO)", "held-out exact match over 3 seeds", expected)
    assert main.findings[0].text.startswith("RL (PPO) beat SFT") and main.findings[0].p < 0.05
    assert f"| all | {np.mean([10, 12, 8]) / 40:.3f} | {np.mean([30, 31, 29]) / 40:.3f} | {interval(*expected)} |" in main.body
    # one seed's interval (over its prompts) is shown per row
    assert f"| 0 | 0.250 | 0.750 | {interval(*paired_test(st.scores('sft', 'exact_match'), st.scores('rl_ppo', 'exact_match')))} |" \
        in main.body
    design = study_report.reward_design(st)
    assert design.findings[0].text.startswith("the shaped reward beat the sparse reward on held-out exact match: +0.250")
    # same FLOPs: sft_compute was given the RL model's FLOPs; the table shows what each side spent
    for name, steps in (("sft", 600), ("sft_compute", 2900), ("sft_labels", 2900)):
        (files / name).mkdir(exist_ok=True)
        (files / name / "trainer_state.json").write_text(json.dumps({"step": steps}))
    flops = {"sft": 1e12, "sft_compute": 4.8e12, "rl_ppo": 3.9e12, "sft_labels": 1e12}
    budget = study_report.same_budget(st, flops=flops)
    assert budget.findings == [
        Finding.of_comparison("SFT given the RL model's FLOPs", "RL", "held-out exact match",
                              paired_test(st.scores("sft_compute", "exact_match"), st.scores("rl_ppo", "exact_match"))),
        Finding.of_comparison("RL", f"SFT with {len(PROMPTS)} labels", "held-out exact match",
                              paired_test(st.scores("rl_ppo", "exact_match"), st.scores("sft_labels", "exact_match")))]
    assert budget.findings[0].text.startswith("RL beat SFT given the RL model's FLOPs on held-out exact match: +0.450")
    assert "| SFT, 2900 steps (the RL model's FLOPs) | 8 | 4.80e+12 | 0.300 | -0.450 [" in budget.body
    assert "| SFT then RL (PPO) on unlabelled prompts with a verifier | 8 | 4.90e+12 | 0.750 | – |" in budget.body
    # flip: RL answers what SFT did and the other way round, in every seed
    flipped = {**counts, "sft": 30, "rl_ppo": 10, "sft_seed1": 31, "rl_ppo_seed1": 12, "sft_seed2": 29, "rl_ppo_seed2": 8}
    write_eval(files, flipped)
    assert study_report.main_comparison(study_report.Study(files), (0, 1, 2)).findings[0].text.startswith(
        "SFT beat RL (PPO) on held-out exact match over 3 seeds: -0.500")
    # one seed's win is not enough when the others disagree: seed variance widens the interval
    write_eval(files, {**counts, "rl_ppo_seed1": 12, "rl_ppo_seed2": 4})
    tie = study_report.main_comparison(study_report.Study(files), (0, 1, 2))
    assert tie.findings[0].text.startswith("no significant difference between SFT and RL (PPO)")
    assert paired_test(st.scores("sft", "exact_match"), st.scores("rl_ppo", "exact_match")).low > 0  # seed 0 alone


def test_holm_over_the_report_turns_a_marginal_finding_not_significant(files, tmp_path):
    """A finding significant on its own (p < 0.05) is shown as not significant once adjusted over
    the report's family, with both verdicts on its line."""
    counts = {"sft": 24, "sft_task_copy": 0, "sft_task_reverse": 0, "sft_task_sort": 0, "sft_task_add": 0}
    write_eval(files, counts)
    section = study_report.multi_task(study_report.Study(files))
    marginal = [f for f in section.findings if 0.01 < f.p < 0.05]  # 6 of a task's 10 prompts: p = 2 / 2^6 exactly
    assert len(marginal) == 4 and all(f.p == 2 / 64 for f in marginal)
    lines = render_family(section.findings + [Finding("another test", 0.5)] * 3)
    for f, line in zip(section.findings, lines):
        if f in marginal:
            assert line.startswith(f.text) and f"; p = {f.p:.3f}, Holm-adjusted p = " in line
            assert line.endswith("not significant after adjustment")


def test_multi_task_compares_on_each_tasks_own_prompts(files):
    write_eval(files, {"sft": 40, **{f"sft_task_{t}": 0 for t in TASKS}})
    section = study_report.multi_task(study_report.Study(files))
    for task, line in zip(TASKS, section.findings):
        n = sum(r["task"] == task for r in PROMPTS)
        assert line.text.startswith(f"the multi-task model beat the {task}-only model on {task} exact match: -1.000")
        assert section.numbers[task]["multi_task"] == 1.0 and n > 0
    write_eval(files, {"sft": 0, **{f"sft_task_{t}": 40 for t in TASKS}})
    assert study_report.multi_task(study_report.Study(files)).findings[0].text.startswith("the copy-only model beat")


def write_curve(folder, gold, proxy, kl):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(
        {"iteration": i + 1, "objective/scores": p, "objective/gold_partial": g, "objective/kl": k})
        + "\n" for i, (g, p, k) in enumerate(zip(gold, proxy, kl))))


def test_over_optimisation_is_called_only_when_the_gold_score_falls_while_the_proxy_rises(files):
    write_eval(files, {"sft": 10, "rl_rm_beta_low": 5, "rl_reward_model": 12, "rl_rm_beta_high": 11})
    n = 64
    t = np.arange(n)
    noise = 0.01 * generator("simulation", 99).standard_normal((3, n))  # so the standard errors are not 0
    kl = list(0.05 * t)
    proxy = list(0.2 + 0.01 * t + noise[0])
    for name in ("rl_reward_model", "rl_rm_beta_high"):
        write_curve(files / name, list(0.5 + noise[1]), proxy, kl)
    gold = 0.5 + 0.2 * np.sin(np.pi * t / n) + noise[2]  # rises, falls
    write_curve(files / "rl_rm_beta_low", list(gold), proxy, kl)
    section = study_report.over_optimisation(study_report.Study(files), (0.005, 0.05, 0.3), "o.png")
    test = overoptimisation_test(gold, np.array(proxy), kl=np.array(kl))
    assert test["fired"] and section.numbers["fell"] and section.findings[0].p == test["p"] < 0.05
    assert section.findings[0].text.endswith(test["verdict"]) and test["verdict"].startswith("over-optimisation")
    gao = section.numbers["gao"]  # the fitted gold peak lies mid-run (the sine's peak: KL 1.6)
    assert gao == test["gao"] and gao["peak_inside"] and 0.8 < gao["kl_peak"] < 2.4
    assert f": its gold peak at KL {gao['kl_peak']:.2f}" in section.findings[1].text and section.findings[1].p is None
    assert (files / "o.png").exists()
    assert section.findings[2].text.startswith("training against the reward model at β = 0.005 lowered held-out gold partial")
    write_curve(files / "rl_rm_beta_low", list(0.5 + 0.004 * t + noise[2]), proxy, kl)  # the gold score keeps rising
    section = study_report.over_optimisation(study_report.Study(files), (0.005, 0.05, 0.3), "o.png")
    assert "no significant over-optimisation" in section.findings[0].text and not section.numbers["fell"]
    assert section.findings[0].p > 0.05


def test_a_section_whose_runs_are_missing_says_which(files):
    write_eval(files, {"sft": 10})
    section = study_report.lora(study_report.Study(files), (4, 16))
    assert section.findings == [] and section.body.startswith("Not run yet: `sft_lora_r4`, `sft_lora_r16`")


def test_human_scores_join_the_report_when_present(files):
    from sftrl.reports import human_eval

    folder = files / "human_eval"
    pairs, key = human_eval.make_pairs(["p1", "p2"], ["a", "b"], ["c", "d"], ["sft", "rl_rloo"], seed=0)
    human_eval.export(pairs, key, folder)
    section = study_report.human_evaluation(study_report.Study(files))
    assert "No ratings yet." in section.body and section.numbers["models"] == ["sft", "rl_rloo"]
    for pair in pairs:  # one rater prefers rl_rloo every time
        better = "A" if key["pairs"][pair["id"]]["A"] == "rl_rloo" else "B"
        human_eval.append_durably(folder / "ratings.jsonl", {"id": pair["id"], "rater": "r1", "choice": better})
    human_eval.score(folder)
    section = study_report.human_evaluation(study_report.Study(files))
    result = json.loads((folder / "score.json").read_text())
    assert section.numbers == result and "| rl_rloo | 1.00 [" in section.body
    assert section.findings[-1].text.startswith(f"rl_rloo won 1.00 [") and "of 2 rated pairs" in section.findings[-1].text


# ----------------------------------------------------------------------------- the whole study, tiny

@pytest.mark.slow
def test_the_tiny_study_writes_every_section_from_its_runs(tmp_path):
    out = tmp_path / "study"
    result = run_cli("pipeline", "--preset", "study", "--size", "tiny", "--out", out, "--quiet", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = (out / "report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert "Not run yet" not in report and "Incomplete" not in report
    for title in summary["sections"]:
        assert f"## {title}" in report
    assert len(summary["sections"]) == 15
    assert len(summary["tests"]) == sum(" p = " in line or " p < " in line for line in summary["findings"]) > 20
    assert all(t["holm_p"] >= t["p"] for t in summary["tests"])
    for line in summary["findings"]:
        assert f"- **Finding:** {line}." in report
    evaluation = json.loads((out / "eval" / "eval.json").read_text())
    rows = {Path(r["model"]).name: r for r in evaluation["models"]}
    seeds = summary["sections"]["SFT against RL, 3 seeds"]["seeds"]
    for seed, (a, b) in zip(seeds, [("sft", "rl_ppo"), ("sft_seed1", "rl_ppo_seed1"), ("sft_seed2", "rl_ppo_seed2")]):
        assert seed["sft"] == rows[a]["exact_match"] and seed["rl"] == rows[b]["exact_match"]
    arch = summary["sections"]["Architectures: BERT-style, GPT-2-style and Llama-style models of one size"]
    for architecture, (a, b) in {"bert": ("sft_scratch", "rl_scratch"), "gpt2": ("sft_gpt2", "rl_gpt2"),
                                 "llama": ("sft_llama", "rl_llama")}.items():
        assert arch["exact_match"][architecture] == {"sft": rows[a]["exact_match"], "rl": rows[b]["exact_match"]}
        assert json.loads((out / a / "config.json").read_text())["model_type"] == architecture
    lora = summary["sections"]["LoRA against full fine-tuning"]
    for rank in study.SIZES["tiny"].lora_ranks:
        state = json.loads((out / f"sft_lora_r{rank}" / "trainer_state.json").read_text())
        assert lora["ranks"][str(rank)]["trainable_parameters"] == state["trainable_parameters"] < state["total_parameters"]
    family = summary["sections"]["The RL family against SFT: PPO, GRPO, RLOO, REINFORCE, DPO"]
    assert family["GRPO"]["runs"] == ["rl_grpo", "rl_grpo_seed1", "rl_grpo_seed2"]
    assert family["DPO"]["exact_match"] == [rows[n]["exact_match"] for n in ("dpo", "dpo_seed1", "dpo_seed2")]
    curve = [json.loads(line) for line in (out / "rl_rm_beta_low" / "metrics.jsonl").read_text().splitlines()]
    over = summary["sections"]["Reward over-optimisation and the reward-KL frontier"]
    assert over["curve"]["gold"] == [r["objective/gold_partial"] for r in curve]  # window 1 at this size
    assert not over["fell"] and "too few iterations" in over["test"]["verdict"]  # 2 iterations tell nothing
    seconds = json.loads((out / "stage_seconds.json").read_text())
    assert summary["stage_seconds"] == seconds and set(seconds) == {"data", "report", *(r.name for r in study.plan(
        study.SIZES["tiny"]))}
    cost = summary["sections"]["Cost: wall time, tokens and FLOPs per stage"]
    sft_state = json.loads((out / "sft" / "trainer_state.json").read_text())
    assert cost["sft"]["tokens"] == sft_state["tokens"] > 0 and cost["rl_ppo"]["seconds"] == seconds["rl_ppo"]
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 4 and 'src="study_' not in page
    assert (out / "human_eval" / "sheet.html").exists()
    # a finished study re-renders its report with --resume (after human ratings, say), running nothing
    shutil.copy(out / "report.md", tmp_path / "before.md")
    again = run_cli("pipeline", "--preset", "study", "--size", "tiny", "--out", out, "--quiet", "--resume", timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "$ sftrl" not in again.stdout
    assert json.loads((out / "stage_seconds.json").read_text())["rl_ppo"] == seconds["rl_ppo"]


def test_the_committed_studys_report_holds_every_finding_of_its_summary():
    """The committed study (docs/results/study/, which the docs' study page is generated from --
    tests/test_docs.py checks the headline table) is one complete run: its report holds every
    finding of its summary."""
    from conftest import REPO

    folder = REPO / "docs" / "results" / "study"
    summary = json.loads((folder / "summary.json").read_text())
    report = (folder / "report.md").read_text()
    assert summary["incomplete"] is None and all(f"- {line}" in report for line in summary["findings"])
    assert summary["stage_seconds"] == json.loads((folder / "stage_seconds.json").read_text())
    assert summary["seconds"] <= 30 * 60  # the study's budget on 2 cores
