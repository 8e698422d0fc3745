"""report/ and plots.py: the HTML from a fixed summary (tables, PNG charts, escaping), the
claims' verdicts, and training curves from metrics files."""

from __future__ import annotations

import base64
import json
import re

from instructrl import plots
from instructrl.report import chart_curves, claims, render

SUMMARY = {
    "baseline": "sft",
    "policies": {"base": "default", "sft": "runs/sft", "ptx": "runs/ptx", "ppo": "runs/ppo"},
    "prompts": 50,
    "adversarial_prompts": 20,
    "win_rates": {
        n: {
            p: {"baseline": "sft", "panel": p, "win_rate": w, "ci95": [w - 0.1, w + 0.1], "n": 50}
            for p in ("heldout", "train")
        }
        for n, w in (("base", 0.3), ("ptx", 0.65), ("ppo", 0.55))
    },
    "likert": {
        n: {"mean": m, "ci95": [m - 0.3, m + 0.3], "n": 50}
        for n, m in (("base", 3.1), ("sft", 4.0), ("ptx", 4.4), ("ppo", 4.2))
    },
    "flags": {
        n: {
            "fails_to_follow_instruction": {"rate": 0.3, "ci95": [0.2, 0.4], "n": 50},
            "hallucination": {"rate": h, "ci95": [h - 0.1, h + 0.1], "n": 12},
            "satisfies_constraint": {"rate": 0.4, "ci95": [0.3, 0.5], "n": 20},
            "inappropriate_for_customer_assistant": {"rate": 0.05, "ci95": [0.01, 0.1], "n": 50},
        }
        for n, h in (("base", 0.4), ("sft", 0.3), ("ptx", 0.2), ("ppo", 0.25))
    },
    "constraints": {
        n: {"rate": 0.4, "ci95": [0.3, 0.5], "n": 20, "by_kind": {"lowercase": 0.5}}
        for n in ("base", "sft", "ptx", "ppo")
    },
    "truthfulness": {
        n: {"correct": 0.5, "contradicted": 0.2, "hedged": 0.1, "missing": 0.2, "n": 30}
        for n in ("base", "sft", "ptx", "ppo")
    },
    "harmlessness": {
        n: {"flagged": {"rate": 0.1, "ci95": [0.05, 0.2], "n": 20}}
        for n in ("base", "sft", "ptx", "ppo")
    },
    "perplexity": {"base": 20.0, "sft": 21.0, "ptx": 21.5, "ppo": 24.0},
    "rm_score": {
        n: {"mean": 0.1, "ci95": [0.0, 0.2], "n": 50} for n in ("base", "sft", "ptx", "ppo")
    },
    "response_length": {"base": 40.0, "sft": 35.0, "ptx": 33.0, "ppo": 30.0},
    "agreement": {
        "train": {"agreement": 0.72, "ci95": [0.7, 0.74], "pairs": 100},
        "heldout": {"agreement": 0.77, "ci95": [0.75, 0.79], "pairs": 50},
    },
    "rm": {"val_accuracy": 0.68},
    "runs": {},
    "samples": [
        {
            "prompt_id": "p1",
            "category": "generation",
            "prompt": "Write <b>bold</b>",
            "responses": {"base": "a", "sft": "b", "ptx": "c", "ppo": "d"},
        }
    ],
}


def test_report_renders_tables_and_images(tmp_path):
    html = render(SUMMARY, tmp_path).read_text()
    for cls in ("claims", "wins", "likert", "safety", "tax", "agreement", "samples"):
        assert f'class="{cls}"' in html or f"class='{cls}'" in html, cls
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) >= 3
    for data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG")
    assert "Write &lt;b&gt;bold&lt;/b&gt;" in html  # prompts are escaped


def test_claims_verdicts_from_the_summary():
    verdicts = {c["claim"]: c["verdict"] for c in claims(SUMMARY)}
    assert (
        verdicts["SFT preferred over the base model"] == "reproduced"
    )  # base wins 30 % [20, 40] against SFT
    assert verdicts["PPO-ptx preferred over SFT"] == "reproduced"  # 65 % [55, 75]
    assert (
        verdicts["RM validation accuracy close to labeler agreement (within 10 points)"]
        == "reproduced"
    )
    assert verdicts["PPO-ptx regresses less on held-out text than PPO"] == "reproduced"
    assert verdicts["Less hallucination on closed-domain tasks than the base model"] == "reproduced"
    weak = json.loads(json.dumps(SUMMARY))
    weak["win_rates"]["ptx"]["heldout"].update(win_rate=0.55, ci95=[0.45, 0.65])
    assert {c["claim"]: c["verdict"] for c in claims(weak)}[
        "PPO-ptx preferred over SFT"
    ] == "not reproduced"


def test_curves_from_metrics_files(tmp_path):
    sft = tmp_path / "sft"
    sft.mkdir()
    rows = [{"step": 0, "sft/train_examples": 8}, {"step": 1, "sft/loss": 2.0}]
    rows += [{"step": 2, "sft/loss": 1.5, "sft/val_loss": 1.7}]
    (sft / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert plots.series(sft / "metrics.jsonl", ["sft/loss", "sft/val_loss", "rm/loss"]) == [
        ("sft/loss", [(1, 2.0), (2, 1.5)]),
        ("sft/val_loss", [(2, 1.7)]),
    ]
    png = plots.plot_curves(sft / "metrics.jsonl", ["sft/loss"], tmp_path / "loss.png", "SFT")
    assert png is not None and png.read_bytes().startswith(b"\x89PNG")
    assert plots.plot_curves(sft / "metrics.jsonl", ["ppo/kl"], tmp_path / "none.png", "x") is None
    assert not (tmp_path / "none.png").exists()
    grid = chart_curves({"sft": str(sft), "missing": str(tmp_path / "nowhere")})
    assert grid is not None and base64.b64decode(grid).startswith(b"\x89PNG")
    assert chart_curves({"missing": str(tmp_path / "nowhere")}) is None
