"""summary.json -> report.html: tables, PNG charts (matplotlib, embedded), and our figures set
beside the paper's, with a plain verdict on each claim. No model is loaded here.

Policy names the claims look for: `base`, `sft`, `ppo`, `ptx` (PPO-ptx).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

from instructrl.plots import curve_figure, pyplot, series
from instructrl.records import FIGURE4_FLAGS
from instructrl.stats import verdict

PAPER = {
    "agreement_train": "72.6 ± 1.5 %",
    "agreement_heldout": "77.3 ± 1.3 %",
    "rm_accuracy": "about 72 % (6B RM on held-out labelers' comparisons: 72.4 %)",
    "sft_over_base": "SFT preferred to GPT-3 (Figure 1)",
    "ptx_over_sft": "PPO-ptx preferred to SFT at every size (Figure 1; 175B: about 70 %)",
    "hallucination": "closed-domain hallucination 41 % (GPT-3) vs 21 % (InstructGPT)",
    "alignment_tax": "PPO-ptx regresses less than PPO on public NLP data sets (Figure 29, E.6)",
}


def _pct(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.1f} %"


def _ci(ci: list[float] | None) -> str:
    return "" if not ci or ci[0] != ci[0] else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _plt():
    return pyplot()


def _size(x: dict[str, Any]) -> str:
    """A figure's n: its prompts, and its samples where prompts had several."""
    return (
        f"{x['n']} prompts x {x['observations'] // max(1, x['n'])}"
        if x.get("observations")
        else str(x["n"])
    )


def preference(
    summary: dict[str, Any], a: str, b: str, panel: str = "heldout"
) -> dict[str, Any] | None:
    """How often a is preferred to b, when one of them is the baseline."""
    wins, baseline = summary.get("win_rates", {}), summary.get("baseline")
    sizes = ("n", "observations")
    if b == baseline and a in wins:
        w = wins[a][panel]
        return {"rate": w["win_rate"], "ci95": w["ci95"], **{k: w[k] for k in sizes if k in w}}
    if a == baseline and b in wins:
        w = wins[b][panel]
        return {
            "rate": 1 - w["win_rate"],
            "ci95": [1 - w["ci95"][1], 1 - w["ci95"][0]],
            **{k: w[k] for k in sizes if k in w},
        }
    return None


# below these sizes a verdict says "too few to tell" whatever its interval
MIN_N = {"preference": 30, "rm_accuracy": 10, "chunks": 8, "hallucination": 20}


def _claim(
    claim: str, paper: str, ours: str | None, verdict: str = "not reproduced"
) -> dict[str, str]:
    """One row of the claims table; ours None means the run did not measure it."""
    if ours is None:
        return {"claim": claim, "paper": paper, "ours": "not measured", "verdict": "not measured"}
    return {"claim": claim, "paper": paper, "ours": ours, "verdict": verdict}


def claims(summary: dict[str, Any]) -> list[dict[str, str]]:
    """Each claim of the paper we can check, with a verdict that rests on its 95 % CI
    (stats.verdict): reproduced only when the interval clears the paper's direction, too few to
    tell under MIN_N, not reproduced otherwise; not measured when the run lacks the figure."""
    rows = []
    for a, b, label, paper in (
        ("sft", "base", "SFT preferred over the base model", PAPER["sft_over_base"]),
        ("ptx", "sft", "PPO-ptx preferred over SFT", PAPER["ptx_over_sft"]),
    ):
        p = preference(summary, a, b)
        if p is None:
            rows.append(_claim(label, paper, None))
            continue
        ours = f"{_pct(p['rate'])} {_ci(p['ci95'])} (n = {_size(p)}, held-out labelers)"
        v = verdict(p["ci95"], p["n"], threshold=0.5, min_n=MIN_N["preference"])
        rows.append(_claim(label, paper, ours, v))
    rows.append(_rm_claim(summary))
    rows.append(_tax_claim(summary))
    hall = {
        k: v["hallucination"] for k, v in summary.get("flags", {}).items() if "hallucination" in v
    }
    label = "Less hallucination on closed-domain tasks than the base model"
    if {"base", "ptx"} <= set(hall) and hall["base"]["n"]:
        base, ptx = hall["base"], hall["ptx"]
        # two intervals on the same prompts: reproduced when they do not overlap
        v = verdict(
            [0.0, ptx["ci95"][1] - base["ci95"][0]],
            ptx["n"],
            threshold=0.0,
            min_n=MIN_N["hallucination"],
            above=False,
        )
        ours = (
            f"base {_pct(base['rate'])} {_ci(base['ci95'])}, PPO-ptx {_pct(ptx['rate'])} "
            f"{_ci(ptx['ci95'])} (n = {ptx['n']})"
        )
        rows.append(_claim(label, PAPER["hallucination"], ours, v))
    else:
        rows.append(_claim(label, PAPER["hallucination"], None))
    return rows


def _rm_claim(summary: dict[str, Any]) -> dict[str, str]:
    label = "RM validation accuracy close to labeler agreement (within 10 points)"
    agreement = summary.get("agreement", {}).get("train", {}).get("agreement")
    rm = summary.get("rm") or {}
    paper = f"{PAPER['rm_accuracy']}; agreement {PAPER['agreement_train']}"
    if agreement is None or (rm.get("accuracy") is None and rm.get("val_accuracy") is None):
        return _claim(label, paper, None)
    acc = rm.get("accuracy")
    if acc is None:  # no recomputed interval: only the training log's figure
        ours = f"RM {_pct(rm['val_accuracy'])} (no interval); agreement {_pct(agreement)}"
        return _claim(label, paper, ours, "too few to tell")
    ours = (
        f"RM {_pct(acc['agreement'])} {_ci(acc['ci95'])} ({acc['pairs']} pairs, "
        f"{acc['prompts']} prompts); agreement {_pct(agreement)}"
    )
    v = verdict(acc["ci95"], acc["prompts"], threshold=agreement - 0.10, min_n=MIN_N["rm_accuracy"])
    return _claim(label, paper, ours, v)


def _tax_claim(summary: dict[str, Any]) -> dict[str, str]:
    label = "PPO-ptx regresses less on held-out text than PPO"
    ppl, tax = summary.get("perplexity", {}), summary.get("alignment_tax", {})
    if not {"ppo", "ptx"} <= set(ppl):
        return _claim(label, PAPER["alignment_tax"], None)
    ours = f"held-out perplexity: PPO {ppl['ppo']:.2f}, PPO-ptx {ppl['ptx']:.2f}"
    ours += f", SFT {ppl['sft']:.2f}" if ppl.get("sft") else ""
    diff = tax.get("ppo - ptx")
    if diff is None:
        return _claim(label, PAPER["alignment_tax"], ours + " (no interval)", "too few to tell")
    ours += (
        f"; NLL PPO - PPO-ptx {diff['mean']:+.3f} nats [{diff['ci95'][0]:+.3f}, "
        f"{diff['ci95'][1]:+.3f}] over {diff['n']} chunks"
    )
    v = verdict(diff["ci95"], diff["n"], threshold=0.0, min_n=MIN_N["chunks"])
    return _claim(label, PAPER["alignment_tax"], ours, v)


def chart_win_rates(summary: dict[str, Any]) -> str | None:
    wins = summary.get("win_rates", {})
    if not wins:
        return None
    plt = _plt()
    names = list(wins)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, panel in zip(axes, ("heldout", "train"), strict=True):
        rates = [wins[n][panel]["win_rate"] for n in names]
        err = [
            [max(0.0, r - wins[n][panel]["ci95"][0]) for n, r in zip(names, rates, strict=True)],
            [max(0.0, wins[n][panel]["ci95"][1] - r) for n, r in zip(names, rates, strict=True)],
        ]
        ax.bar(names, rates, yerr=err, capsize=4, color="#4c72b0")
        ax.axhline(0.5, ls="--", color="grey", lw=1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{panel} labelers")
    axes[0].set_ylabel(f"win rate against {summary.get('baseline')}")
    fig.suptitle("Preference against the baseline (paper Figure 1)")
    return _png(fig)


def chart_flags(
    flags: dict[str, Any], title: str = "Metadata from held-out labelers (paper Figure 4)"
) -> str | None:
    if not flags:
        return None
    plt = _plt()
    names = list(flags)
    keys = [k for k in FIGURE4_FLAGS if any(k in flags[n] for n in names)]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        rates = [flags[n].get(key, {}).get("rate", 0.0) for n in names]
        lo = [
            max(0.0, r - flags[n].get(key, {}).get("ci95", [r, r])[0])
            for n, r in zip(names, rates, strict=True)
        ]
        hi = [
            max(0.0, flags[n].get(key, {}).get("ci95", [r, r])[1] - r)
            for n, r in zip(names, rates, strict=True)
        ]
        ax.bar(names, rates, yerr=[lo, hi], capsize=3, color="#55a868")
        ax.set_ylim(0, 1)
        ax.set_title(key.replace("_", " "), fontsize=9)
    fig.suptitle(title, y=1.04)  # above the panel titles
    return _png(fig)


def chart_bars(values: dict[str, float], title: str, ylabel: str) -> str | None:
    if not values:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.0))
    ax.bar(list(values), list(values.values()), color="#c44e52")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    return _png(fig)


CURVE_KEYS = (
    "sft/loss",
    "sft/val_loss",
    "rm/loss",
    "rm/val_accuracy",
    "ppo/score",
    "ppo/kl",
    "ppo/ptx_loss",
)


def chart_curves(runs: dict[str, str]) -> str | None:
    """Every stage's training curves in one grid (from each run directory's metrics.jsonl)."""
    panels = [
        panel
        for name, path in runs.items()
        for panel in series(Path(path) / "metrics.jsonl", CURVE_KEYS, label=name)
    ]
    if not panels:
        return None
    return _png(curve_figure(panels, title="Training curves by stage", cols=4))


def chart_overoptimization(curves: dict[str, list[dict[str, float]]]) -> str | None:
    """Proxy (RM) and gold (held-out panel) score against KL to the SFT policy, per PPO run."""
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for name, points in curves.items():
        kl = [pt["kl"] for pt in points]
        axes[0].plot(kl, [pt["proxy"] for pt in points], marker="o", label=name)
        axes[1].plot(kl, [pt["gold"] for pt in points], marker="o", label=name)
    axes[0].set_title("proxy: RM score")
    axes[1].set_title("gold: held-out panel score")
    for ax in axes:
        ax.set_xlabel("KL to SFT (nats per response)")
        ax.legend(fontsize=8)
    fig.suptitle("Over-optimisation over PPO iterations (Gao et al. 2022)", y=1.03)
    return _png(fig)


def _diagnostics(summary: dict[str, Any]) -> dict[str, list[list[Any]]]:
    """Rows of the tables that show where the chain breaks."""
    best = summary.get("best_of") or {}
    rm = summary.get("rm") or {}
    rm_rows = []
    for key, label in (
        ("accuracy", "training labelers (validation)"),
        ("heldout", "held-out labelers"),
    ):
        acc = rm.get(key)
        if not acc:
            continue
        rm_rows.append(
            [label, "all", _pct(acc["agreement"]), _ci(acc["ci95"]), acc["pairs"], acc["prompts"]]
        )
        for cat, a in acc.get("by_category", {}).items():
            rm_rows.append(
                [label, cat, _pct(a["agreement"]), _ci(a["ci95"]), a["pairs"], a["prompts"]]
            )
    categories = [
        [name, cat, _pct(w["win_rate"]), _ci(w["ci95"]), w["n"]]
        for name, by in summary.get("win_rates", {}).items()
        for cat, w in by.get("heldout", {}).get("by_category", {}).items()
    ]
    tax = [
        [pair, f"{d['mean']:+.3f}", f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]", d["n"]]
        for pair, d in summary.get("alignment_tax", {}).items()
    ]
    return {
        "best_of": [
            [
                f"best of {best['k']} {best['baseline']} samples by {label}",
                _pct(best[key]["win_rate"]),
                _ci(best[key]["ci95"]),
                best[key]["n"],
                _pct(best[key]["picked_baseline_sample"]),
            ]
            for key, label in (("rm", "the RM"), ("panel", "the held-out panel (ceiling)"))
            if key in best
        ],
        "rm_accuracy": rm_rows,
        "identical": [
            [pair, _pct(x["rate"]), _ci(x["ci95"]), x["n"]]
            for pair, x in summary.get("identical", {}).items()
        ],
        "categories": categories,
        "tax_pairs": tax,
    }


def _template() -> Any:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("instructrl.report", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html")


def _rows(summary: dict[str, Any]) -> dict[str, list[list[Any]]]:
    """The report's tables as rows of display strings (escaped by the template)."""
    judges = [("panel", summary.get("likert", {}), summary.get("flags", {}))]
    if summary.get("human_likert"):
        judges.append(("people", summary["human_likert"], summary.get("human_flags", {})))
    truth, harm = summary.get("truthfulness", {}), summary.get("harmlessness", {})
    ppl, rm = summary.get("perplexity", {}), summary.get("rm_score", {})
    ag = summary.get("agreement", {})
    samples = summary.get("samples", [])
    names = list(samples[0]["responses"]) if samples else []
    return {
        "wins": [
            [n, p, _pct(w["win_rate"]), _ci(w["ci95"]), _size(w)]
            for n, by in summary.get("win_rates", {}).items()
            for p, w in by.items()
        ],
        "likert": [
            [
                n,
                judge,
                f"{likert[n]['mean']:.2f}",
                f"[{likert[n]['ci95'][0]:.2f}, {likert[n]['ci95'][1]:.2f}]",
                likert[n]["n"],
                *[_pct(f.get(k, {}).get("rate")) for k in FIGURE4_FLAGS],
            ]
            for judge, likert, flags in judges
            for n, f in flags.items()
        ],
        "safety": [
            [
                n,
                f"{_pct(c['rate'])} {_ci(c['ci95'])}",
                _pct(truth[n]["correct"]),
                _pct(truth[n]["contradicted"]),
                _pct(truth[n]["hedged"]),
                _pct(harm[n]["flagged"]["rate"]),
            ]
            for n, c in summary.get("constraints", {}).items()
        ],
        "tax": [
            [
                n,
                f"{ppl[n]:.2f}",
                f"{rm[n]['mean']:.3f}" if n in rm else "n/a",
                f"{summary.get('response_length', {}).get(n, 0):.1f}",
            ]
            for n in ppl
        ],
        "agreement": [
            [g, _pct(ag[g]["agreement"]), _ci(ag[g]["ci95"]), PAPER[f"agreement_{g}"]]
            for g in ("train", "heldout")
            if g in ag
        ],
        "samples": [
            [s["category"], s["prompt"], *[s["responses"][n] for n in names]] for s in samples
        ],
        "sample_names": names,
    }


def render(summary: dict[str, Any], out: str | Path) -> Path:
    """Write out/report.html from a summary (as written by `instructrl eval`) through the
    Jinja template templates/report.html (autoescaped)."""
    charts = {
        "wins": chart_win_rates(summary),
        "flags": chart_flags(summary.get("flags", {})),
        "human_flags": chart_flags(
            summary.get("human_flags", {}), "Metadata from people (held-out group)"
        ),
        "perplexity": chart_bars(
            summary.get("perplexity", {}), "Held-out perplexity (lower is better)", "perplexity"
        ),
        "curves": chart_curves(summary.get("runs", {})),
        "overoptimization": chart_overoptimization(summary.get("overoptimization", {})),
    }
    html = _template().render(
        summary=summary,
        claims=claims(summary),
        charts=charts,
        likert_headers=[
            "policy",
            "judged by",
            "Likert 1-7",
            "95 % CI",
            "n",
            *[k.replace("_", " ") for k in FIGURE4_FLAGS],
        ],
        **_rows(summary),
        **_diagnostics(summary),
    )
    path = Path(out) / "report.html"
    path.write_text(html, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- markdown
README_BEGIN = "<!-- instructrl report --markdown: begin -->"
README_END = "<!-- instructrl report --markdown: end -->"


def markdown(summary: dict[str, Any], run: dict[str, Any] | None = None) -> str:
    """The headline figures as Markdown, with when, where and on which config they were
    measured (`instructrl report --markdown RUN_DIR`; the README's table is this output)."""
    env = summary.get("environment", {})
    run = run or {}
    where = (
        f"{env.get('date', 'date unknown')} on {env.get('platform', '?')} with "
        f"{env.get('cpus', '?')} CPU cores ({env.get('device', '?')}), torch {env.get('torch', '?')}"
    )
    lines = []
    if run:
        minutes = run.get("wall_s", 0) / 60
        lines.append(
            f"Run `{run.get('name')}` (seed {run.get('seed')}, config "
            f"{run.get('config', '?')}), stages {minutes:.1f} min in all; measured {where}."
        )
    else:
        lines.append(f"Measured {where}.")
    lines += ["", "| claim | ours | verdict |", "|---|---|---|"]
    lines += [f"| {c['claim']} | {c['ours']} | {c['verdict']} |" for c in claims(summary)]
    lines += ["", "| figure | value |", "|---|---|"]
    for name, by in summary.get("win_rates", {}).items():
        w = by["heldout"]
        lines.append(
            f"| {name} vs {w['baseline']}, held-out labelers | {_pct(w['win_rate'])} "
            f"{_ci(w['ci95'])} (n = {_size(w)}) |"
        )
    acc = (summary.get("rm") or {}).get("accuracy")
    if acc:
        lines.append(f"| RM validation accuracy | {_pct(acc['agreement'])} {_ci(acc['ci95'])} |")
    for group, a in summary.get("agreement", {}).items():
        lines.append(f"| labeler agreement ({group}) | {_pct(a['agreement'])} {_ci(a['ci95'])} |")
    best = summary.get("best_of") or {}
    for key, label in (("rm", "RM"), ("panel", "held-out panel")):
        if key in best:
            b = best[key]
            lines.append(
                f"| best of {best['k']} {best['baseline']} samples by the {label} vs one | "
                f"{_pct(b['win_rate'])} {_ci(b['ci95'])} |"
            )
    for name, ppl in summary.get("perplexity", {}).items():
        lines.append(f"| held-out perplexity, {name} | {ppl:.2f} |")
    for name, c in summary.get("constraints", {}).items():
        lines.append(f"| constraints followed, {name} | {_pct(c['rate'])} {_ci(c['ci95'])} |")
    return "\n".join(lines) + "\n"


SEEDS_BEGIN = "<!-- instructrl report --seeds: begin -->"
SEEDS_END = "<!-- instructrl report --seeds: end -->"


def seeds_markdown(runs: list[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    """One row per run (run info, summary) of the same config under different seeds: each
    headline claim with its interval and verdict, then how many seeds reproduce each claim
    (`instructrl report RUN_DIR RUN_DIR ...`)."""
    head = (
        "| run | seed | SFT over base | PPO-ptx over SFT | PPO over SFT | RM accuracy vs "
        "agreement | held-out perplexity SFT / PPO / PPO-ptx | PPO-ptx regresses less | minutes |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    counts: dict[str, int] = {}
    for run, summary in runs:
        by_claim = {c["claim"]: c for c in claims(summary)}
        cells = []
        for a, b in (("sft", "base"), ("ptx", "sft"), ("ppo", "sft")):
            p = preference(summary, a, b)
            if p is None:
                cells.append("not measured")
                continue
            v = verdict(p["ci95"], p["n"], threshold=0.5, min_n=MIN_N["preference"])
            counts[f"{a} over {b}"] = counts.get(f"{a} over {b}", 0) + (v == "reproduced")
            cells.append(f"{_pct(p['rate'])} {_ci(p['ci95'])}: {v}")
        rm = next(c for k, c in by_claim.items() if k.startswith("RM validation accuracy"))
        counts["rm"] = counts.get("rm", 0) + (rm["verdict"] == "reproduced")
        acc = (summary.get("rm") or {}).get("accuracy") or {}
        agreement = summary.get("agreement", {}).get("train", {}).get("agreement")
        cells.append(
            f"{_pct(acc.get('agreement'))} {_ci(acc.get('ci95'))} vs {_pct(agreement)}: "
            f"{rm['verdict']}"
        )
        ppl = summary.get("perplexity", {})
        cells.append(
            " / ".join(f"{ppl[k]:.2f}" if k in ppl else "-" for k in ("sft", "ppo", "ptx"))
        )
        tax = next(c for k, c in by_claim.items() if k.startswith("PPO-ptx regresses less"))
        counts["tax"] = counts.get("tax", 0) + (tax["verdict"] == "reproduced")
        cells.append(tax["verdict"])
        cells.append(f"{run.get('wall_s', 0) / 60:.1f}")
        lines.append(f"| {run.get('name')} | {run.get('seed')} | " + " | ".join(cells) + " |")
    n = len(runs)
    lines += [
        "",
        f"Reproduced (95 % CI clear of the paper's threshold) on: SFT over base "
        f"{counts.get('sft over base', 0)} of {n} seeds, PPO-ptx over SFT "
        f"{counts.get('ptx over sft', 0)} of {n}, PPO over SFT {counts.get('ppo over sft', 0)} of "
        f"{n}, RM within 10 points of agreement {counts.get('rm', 0)} of {n}, PPO-ptx regressing "
        f"less than PPO {counts.get('tax', 0)} of {n}.",
    ]
    return "\n".join(lines) + "\n"


def replace_block(text: str, block: str, begin: str = README_BEGIN, end: str = README_END) -> str:
    """text with the part between the begin and end markers replaced by block."""
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"expected the markers {begin} and {end}")
    return text[: start + len(begin)] + "\n" + block + text[stop:]
