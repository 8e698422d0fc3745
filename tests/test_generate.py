"""`instructrl generate` and `validate` end to end on a tiny random model (the generation path
itself: test_rollout.py)."""

from __future__ import annotations

import json

from instructrl.cli import main
from instructrl.records import read_records


def test_generate_cli_end_to_end(tiny_model_dir, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "prompt": f"Write about topic {i}."}) + "\n"
            for i in range(3)
        )
    )
    out1, out2 = tmp_path / "s1.jsonl", tmp_path / "s2.jsonl"
    common = [
        "generate",
        f"model={tiny_model_dir}",
        "--prompts",
        str(prompts),
        "samples=2",
        "sampling.max_new_tokens=5",
        "sampling.batch_size=4",
        "sampling.seed=3",
    ]
    assert main([*common, f"out={out1}"]) == 0
    assert main([*common, f"out={out2}"]) == 0
    samples = read_records(out1, "sample")
    assert [s.prompt_id for s in samples] == ["p0", "p0", "p1", "p1", "p2", "p2"]
    assert {s.model for s in samples} == {str(tiny_model_dir)}
    assert [s.seed for s in samples] == [3, 3, 3, 3, 4, 4]  # batch i uses seed + i
    assert all(s.finish_reason in ("eos", "length") for s in samples)
    assert out1.read_text() == out2.read_text()  # seeded


def test_generate_cli_prompt_to_stdout(tiny_model_dir, capsys):
    assert (
        main(
            [
                "-q",
                "generate",
                f"model={tiny_model_dir}",
                "--prompt",
                "Say hi, please: now",
                "sampling.max_new_tokens=3",
            ]
        )
        == 0
    )
    [line] = capsys.readouterr().out.splitlines()
    record = json.loads(line)
    assert record["prompt"] == "Say hi, please: now" and record["prompt_id"] == "prompt-0"


def test_generate_missing_model_is_a_clean_error(tmp_path, capsys):
    assert main(["generate", f"model={tmp_path / 'nope'}", "--prompt", "x"]) == 2
    err = capsys.readouterr().err
    assert "not a local directory and not in the local Hugging Face cache" in err
    assert "pass model=default" in err and "Traceback" not in err


def test_validate_cli(tmp_path, capsys):
    good = tmp_path / "c.jsonl"
    good.write_text(
        json.dumps({"prompt": "q", "responses": ["a", "b", "c", "d"], "ranking": [3, 2, 1, 0]})
        + "\n"
        + json.dumps({"prompt": "q", "responses": ["a", "b"], "ranking": [[0, 1]]})
        + "\n"
    )
    assert main(["validate", str(good)]) == 0
    assert capsys.readouterr().out.strip() == f"{good}: 2 comparison records, K 2..4"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "responses": ["a", "b"], "ranking": [0, 0]}) + "\n")
    assert main(["validate", str(bad), "--kind", "comparison"]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"instructrl: error: {bad}:1: ranking: expected a permutation of 0..1, got [0, 0]\n"
    )


def test_stdout_holds_only_records(tiny_model_dir):
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "instructrl.cli",
            "generate",
            f"model={tiny_model_dir}",
            "--prompt",
            "Hi",
            "sampling.max_new_tokens=3",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    [line] = proc.stdout.splitlines()  # logs ("generated ... tokens/s") go to stderr
    assert json.loads(line)["prompt"] == "Hi"
    assert "tokens/s" in proc.stderr
