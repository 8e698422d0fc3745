"""cli.py: user errors in one line with exit 2 and no traceback, help that lists every key,
the resolved config printed, unknown commands refused."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from instructrl.cli import main


def test_a_config_error_is_one_line_without_traceback(capsys):
    assert main(["sft"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "instructrl: error: config: data: expected a demonstrations JSONL file (data=FILE), got nothing"
    )
    assert main(["ppo", "lrr=1e-5"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'lrr' for ppo; valid keys:" in err and "Traceback" not in err


def test_help_lists_every_key_with_type_and_default(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["rm", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for line in ("  heldout_data ", "  lora.r ", "  batch_size "):
        assert line in out, line
    assert "[int, default: 4]" in out  # rm's batch_size: prompts per micro-batch


def test_print_config_resolves_yaml_and_overrides(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr: 0.003\nbatch_size: 2\n")
    assert main(["sft", str(cfg), "batch_size=5", "data=d.jsonl", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["lr"], printed["batch_size"], printed["data"]) == (0.003, 5, "d.jsonl")
    assert printed["epochs"] == 2  # the stage's own default


def test_unknown_command_and_flag_are_refused():
    run = [sys.executable, "-m", "instructrl.cli"]
    bad = subprocess.run([*run, "train"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "invalid choice: 'train'" in bad.stderr
    flag = subprocess.run([*run, "sft", "--lr", "1"], capture_output=True, text=True, check=False)
    assert flag.returncode == 2 and "unrecognized arguments: --lr" in flag.stderr


def test_report_markdown_and_readme_block(tmp_path, capsys):
    from test_report import SUMMARY

    from instructrl.report import README_BEGIN, README_END

    run = tmp_path / "runs" / "demo"
    (run / "eval").mkdir(parents=True)
    summary = {
        **SUMMARY,
        "environment": {
            "date": "2026-11-26 12:00 UTC",
            "cpus": 2,
            "platform": "Linux x86_64",
            "device": "cpu",
            "torch": "2.13.0",
        },
    }
    (run / "eval" / "summary.json").write_text(json.dumps(summary))
    (run / "config.yaml").write_text("name: demo\nseed: 2\n")
    (run / "stages.json").write_text(json.dumps([{"wall_s": 600.0}, {"wall_s": 300.0}]))
    assert main(["report", str(run), "--markdown"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("Run `demo` (seed 2, config ")
    assert (
        "stages 15.0 min in all; measured 2026-11-26 12:00 UTC on Linux x86_64 with 2 CPU cores"
        in text
    )
    assert (
        "| PPO-ptx preferred over SFT | 65.0 % [55.0, 75.0] (n = 50, held-out labelers) | reproduced |"
        in text
    )
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{README_BEGIN}\nold figures\n{README_END}\ntail\n")
    assert main(["report", str(run), "--readme", str(readme)]) == 0
    new = readme.read_text()
    assert "old figures" not in new and text in new and new.endswith(f"{README_END}\ntail\n")
    readme.write_text("no markers\n")
    assert main(["report", str(run), "--readme", str(readme)]) == 2
    assert "expected the markers" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "expected summary.json" in capsys.readouterr().err
    assert main(["report", str(run)]) == 0  # report.html again
    assert (run / "eval" / "report.html").is_file()


def test_report_of_several_seeds_is_one_table_with_counts(tmp_path, capsys):
    """`instructrl report RUN RUN ...`: a row per seed with each claim's interval and verdict,
    then how many seeds reproduce each claim; --readme writes it between the seeds markers."""
    from test_report import SUMMARY

    from instructrl.report import SEEDS_BEGIN, SEEDS_END

    runs = []
    for seed, ptx in ((1, 0.65), (2, 0.52)):  # seed 2: PPO-ptx's interval straddles 50 %
        run = tmp_path / f"s{seed}"
        (run / "eval").mkdir(parents=True)
        wins = {**SUMMARY["win_rates"]}
        wins["ptx"] = {
            p: {
                "baseline": "sft",
                "panel": p,
                "win_rate": ptx,
                "ci95": [ptx - 0.1, ptx + 0.1],
                "n": 50,
            }
            for p in ("heldout", "train")
        }
        (run / "eval" / "summary.json").write_text(json.dumps({**SUMMARY, "win_rates": wins}))
        (run / "config.yaml").write_text(f"name: s{seed}\nseed: {seed}\n")
        (run / "stages.json").write_text(json.dumps([{"wall_s": 600.0 * seed}]))
        runs.append(str(run))
    assert main(["report", *runs]) == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith("| s")]
    assert rows == [
        "| s1 | 1 | 70.0 % [60.0, 80.0]: reproduced | 65.0 % [55.0, 75.0]: reproduced | "
        "55.0 % [45.0, 65.0]: not reproduced | 68.0 % [64.0, 72.0] vs 72.0 %: reproduced | "
        "21.00 / 24.00 / 21.50 | reproduced | 10.0 |",
        "| s2 | 2 | 70.0 % [60.0, 80.0]: reproduced | 52.0 % [42.0, 62.0]: not reproduced | "
        "55.0 % [45.0, 65.0]: not reproduced | 68.0 % [64.0, 72.0] vs 72.0 %: reproduced | "
        "21.00 / 24.00 / 21.50 | reproduced | 20.0 |",
    ]
    assert (
        "SFT over base 2 of 2 seeds, PPO-ptx over SFT 1 of 2, PPO over SFT 0 of 2, RM within 10 "
        "points of agreement 2 of 2, PPO-ptx regressing less than PPO 2 of 2." in text
    )
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{SEEDS_BEGIN}\nold\n{SEEDS_END}\n")
    assert main(["report", *runs, "--readme", str(readme)]) == 0
    assert readme.read_text() == f"# x\n{SEEDS_BEGIN}\n{text}{SEEDS_END}\n"
