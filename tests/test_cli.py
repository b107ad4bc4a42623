import json
import subprocess
import sys

import pytest

from conftest import REPO, run_cli
from shared.tokenizer import Tokenizer


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_help_lists_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("data", "tokenizer"):
        assert command in result.stdout


def test_console_script_is_installed():
    script = REPO / ".venv" / "bin" / "sftrl"
    if not script.exists():
        pytest.skip("no .venv console script (tests run outside make)")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("sftrl ")


def test_data_and_tokenizer_commands(tmp_path):
    result = run_cli("data", "--out", tmp_path / "data", "--seed", "1")
    assert result.returncode == 0, result.stderr
    expected = [f"{kind}.{split}.jsonl" for kind in ("sft", "prompt", "preference", "text", "text_contaminated")
                for split in ("train", "eval")]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted(expected)
    first = json.loads((tmp_path / "data" / "sft.train.jsonl").read_text().splitlines()[0])
    assert set(first) == {"prompt", "completion", "task"}

    result = run_cli("tokenizer", "--data", tmp_path / "data" / "sft.train.jsonl",
                     tmp_path / "data" / "preference.train.jsonl", "--vocab-size", "300",
                     "--out", tmp_path / "tok.json")
    assert result.returncode == 0, result.stderr
    tokenizer = Tokenizer.load(tmp_path / "tok.json")
    assert tokenizer.vocab_size == 300
    assert tokenizer.decode(tokenizer.encode(first["prompt"])) == first["prompt"]


def test_light_commands_import_no_framework(tmp_path):
    code = ("import sys; from sftrl.cli import main\n"
            f"main(['data', '--out', {str(tmp_path)!r}])\n"
            "print([m for m in ('torch', 'tensorflow') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("make_args,fragments", [
    (lambda d: ["tokenizer", "--data", d / "missing.jsonl", "--out", d / "t.json"],
     ["missing.jsonl: no such file"]),
    (lambda d: ["tokenizer", "--data", d, "--out", d / "t.json"], ["is a directory"]),
    (lambda d: ["tokenizer", "--data", d / "bad.jsonl", "--out", d / "t.json"],
     ["bad.jsonl:2: invalid JSON"]),
    (lambda d: ["tokenizer", "--data", d / "bad.jsonl", "--vocab-size", "10", "--out", d / "t.json"],
     ["--vocab-size: must be >= 261"]),
    (lambda d: ["tokenizer", "--data", d / "bad.jsonl", "--vocab-size", "many", "--out", d / "t"],
     ["--vocab-size", "'many'"]),
    (lambda d: ["tokenizer", "--data", d / "bad.jsonl"], ["--out"]),
    (lambda d: ["data", "--out", d / "x", "--seed", "-1"], ["--seed", "must be >= 0"]),
    (lambda d: ["frobnicate"], ["invalid choice: 'frobnicate'"]),
    (lambda d: ["data", "--out", d / "bad.jsonl"], ["bad.jsonl: exists and is not a directory"]),
])
def test_user_errors_are_one_line_exit_2(tmp_path, make_args, fragments):
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": \n')
    result = run_cli(*make_args(tmp_path))
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "t.json").exists()


def test_parity_command_prints_table_and_json(tmp_path):
    result = run_cli("parity", "--level", "losses", "--dtype", "float64", "--json", tmp_path / "p.json",
                     "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| loss.ppo_clip_loss | losses | float64 |" in result.stdout
    written = json.loads((tmp_path / "p.json").read_text())
    records = written["results"]
    assert written["versions"]["cpu"] and written["versions"]["torch"].startswith("2.13")
    assert {r["level"] for r in records} == {"losses"} and all(r["dtype"] == "float64" for r in records)
    assert all(r["passed"] for r in records) and len(records) >= 14
    assert result.stdout.strip().endswith(f"{len(records)} passed, 0 failed")


def test_parity_html_writes_one_offline_page(tmp_path):
    out = tmp_path / "parity.html"
    result = run_cli("parity", "--case", "loss.gae", "attention.causal", "--html", out, "--quiet")
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.count("<section ") == 2
    assert 'id="loss.gae"' in text and 'id="attention.causal"' in text
    assert "<script" not in text and "http" not in text


def test_parity_show_and_unknown_case():
    result = run_cli("parity", "--show", "loss.gae")
    assert result.returncode == 0
    assert result.stdout.count("def gae(") == 3
    for path in ("shared/reference.py", "torch_impl/losses.py", "tf_impl/losses.py"):  # where each is written
        line = int(result.stdout.split(f"{path}:")[1].split()[0])
        assert (REPO / path).read_text().splitlines()[line - 1].startswith("def gae(")
    assert_one_line_error(run_cli("parity", "--case", "no.such.case"), "--case: unknown case 'no.such.case'")
    assert_one_line_error(run_cli("parity", "--level", "everything"), "--level", "invalid choice")
