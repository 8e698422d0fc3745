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
            "hallucination": {"rate": h, "ci95": [h - 0.05, h + 0.05], "n": 30},
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
    "rm": {
        "val_accuracy": 0.68,
        "accuracy": {
            "agreement": 0.68,
            "ci95": [0.64, 0.72],
            "pairs": 300,
            "prompts": 20,
            "by_category": {
                "qa": {"agreement": 0.7, "ci95": [0.6, 0.8], "pairs": 150, "prompts": 10}
            },
        },
    },
    "alignment_tax": {
        "ppo - ptx": {"mean": 0.1, "ci95": [0.05, 0.15], "n": 16},
        "ptx - sft": {"mean": 0.02, "ci95": [-0.01, 0.05], "n": 16},
    },
    "best_of": {
        "k": 4,
        "baseline": "sft",
        "rm": {"win_rate": 0.6, "ci95": [0.5, 0.7], "n": 50, "picked_baseline_sample": 0.25},
        "panel": {"win_rate": 0.8, "ci95": [0.7, 0.9], "n": 50, "picked_baseline_sample": 0.2},
    },
    "identical": {"ptx vs sft": {"rate": 0.1, "ci95": [0.04, 0.2], "n": 50}},
    "overoptimization": {
        "ppo": [
            {"first": 1, "last": 2, "kl": 0.1, "proxy": 0.2, "gold": 0.6, "n": 16},
            {"first": 3, "last": 4, "kl": 1.5, "proxy": 0.9, "gold": 0.55, "n": 16},
        ]
    },
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
    for cls in (
        "claims",
        "wins",
        "likert",
        "safety",
        "tax",
        "agreement",
        "samples",
        "best_of",
        "rm_accuracy",
        "identical",
        "tax_pairs",
    ):
        assert f'class="{cls}"' in html or f"class='{cls}'" in html, cls
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) >= 4  # the over-optimisation chart among them
    assert "over-optimisation" in html
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
    weak["flags"]["ptx"]["hallucination"].update(n=4)
    weak["alignment_tax"]["ppo - ptx"].update(ci95=[-0.02, 0.15])
    weak["rm"]["accuracy"].update(ci95=[0.55, 0.70])  # agreement 72 %: could be 17 points off
    got = {c["claim"]: c["verdict"] for c in claims(weak)}
    assert got["PPO-ptx preferred over SFT"] == "not reproduced"  # the CI spans 50 %
    assert got["Less hallucination on closed-domain tasks than the base model"] == "too few to tell"
    assert got["PPO-ptx regresses less on held-out text than PPO"] == "not reproduced"
    assert (
        got["RM validation accuracy close to labeler agreement (within 10 points)"]
        == "not reproduced"
    )
    del weak["win_rates"]["ptx"]
    assert {c["claim"]: c["verdict"] for c in claims(weak)}["PPO-ptx preferred over SFT"] == (
        "not measured"
    )


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
