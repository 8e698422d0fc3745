"""cli.py: user errors in one line with exit 2 and no traceback, help that lists every key,
the resolved config printed, unknown commands refused."""

from __future__ import annotations

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
