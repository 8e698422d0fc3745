"""Evaluation: aggregation by hand, truth outcomes, perplexity by an independent path, and
`instructrl eval` end to end on tiny models (statistics: test_stats.py; report: test_report.py)."""

from __future__ import annotations

import base64
import json
import math
import re

import pytest
import torch

from instructrl import models, rollout, stats
from instructrl.config import EvalConfig, load_config
from instructrl.records import Prompt, Sample, read_records
from instructrl.stages import evaluate


def test_likert_and_flag_aggregation_by_hand():
    likert = stats.mean_ci([7.0, 5.0, 6.0, 2.0])
    assert likert["mean"] == 5.0 and likert["n"] == 4
    flags = stats.proportion([True, False, False, True, False])
    assert flags["rate"] == pytest.approx(0.4) and flags["ci95"] == pytest.approx(
        list(stats.wilson(2, 5))
    )


def test_human_metadata_per_policy_by_hand():
    from instructrl.records import Rating

    def r(pid, likert, model, **flags):
        return Rating.from_dict(
            {"prompt_id": pid, "response": "x", "likert": likert, "flags": flags, "model": model}
        )

    prompts = [
        Prompt.from_dict({"id": "sum", "prompt": "Summarize: ...", "category": "summarization"}),
        Prompt.from_dict({"id": "gen", "prompt": "Write a poem.", "category": "generation"}),
    ]
    ratings = [
        r("sum", 6, "ppo", hallucination=True, fails_to_follow_instruction=False),
        r("gen", 4, "ppo", hallucination=True, fails_to_follow_instruction=True),
        r("elsewhere", 2, "ppo", hallucination=True),  # not an eval prompt: not closed-domain
        r("sum", 3, "sft", hallucination=False, fails_to_follow_instruction=True),
        Rating.from_dict({"prompt_id": "gen", "response": "y", "likert": 7}),  # no policy
    ]
    got = evaluate.human_metadata(ratings, prompts, seed=0)
    assert set(got) == {"ppo", "sft"}
    likert, flags = got["ppo"]
    assert likert["mean"] == 4.0 and likert["n"] == 3
    # hallucination counts on the one closed-domain rating only; an unset flag is not counted
    assert flags["hallucination"]["rate"] == 1.0 and flags["hallucination"]["n"] == 1
    assert flags["fails_to_follow_instruction"]["rate"] == 0.5
    assert flags["fails_to_follow_instruction"]["n"] == 2
    assert flags["satisfies_constraint"]["n"] == 0
    likert, flags = got["sft"]
    assert likert["mean"] == 3.0 and flags["hallucination"]["rate"] == 0.0


def test_human_outcomes_by_hand():
    from instructrl.records import Comparison

    def c(ranking, models):
        return Comparison.from_dict(
            {"prompt": "q", "responses": ["a", "b", "c"], "ranking": ranking, "models": models}
        )

    comparisons = [
        c([0, 1, 2], ["ppo", "sft", "base"]),  # ppo above sft: 1
        c([2, [0, 1]], ["ppo", "sft", "base"]),  # tied: 0.5
        c([1, 2, 0], ["sft", "ppo", "x"]),  # sft (index 0) last, ppo second: 1
        c([0, 1, 2], ["sft", "base", "x"]),  # no ppo: left out
        Comparison.from_dict({"prompt": "q", "responses": ["a", "b"], "ranking": [0, 1]}),
    ]
    assert evaluate.human_outcomes(comparisons, "ppo", "sft") == [1.0, 0.5, 1.0]
    assert evaluate.human_outcomes(comparisons, "sft", "ppo") == [0.0, 0.5, 0.0]


def test_truth_outcomes_and_constraints_by_hand():
    p = Prompt(
        id="q",
        prompt="What is the capital of Peru?",
        extra={"answers": ["Lima"], "distractors": ["Cusco", "Quito"]},
    )
    assert [
        evaluate.truth_outcome(p, r)
        for r in ("It is Lima.", "It is Cusco.", "Lima or Quito.", "No idea.")
    ] == ["correct", "contradicted", "hedged", "missing"]
    premise = Prompt(
        id="f",
        prompt="Why do dogs lay eggs?",
        extra={"adversarial": {"type": "false_premise", "correction": ["do not lay"]}},
    )
    assert evaluate.truth_outcome(premise, "Dogs do not lay eggs.") == "correct"
    assert evaluate.truth_outcome(premise, "Because they are birds.") == "contradicted"
    prompts = [
        Prompt(id="a", prompt="x", constraints=[{"kind": "lowercase"}, {"kind": "no_commas"}]),
        Prompt(id="b", prompt="y", constraints=[{"kind": "lowercase"}]),
        Prompt(id="c", prompt="z"),
    ]
    samples = [
        Sample(prompt_id=p.id, prompt=p.prompt, response=r, model="m", finish_reason="eos")
        for p, r in zip(prompts, ["all lower, with comma", "Not Lower", "anything"], strict=True)
    ]
    figures = evaluate.constraint_figures(prompts, samples)
    assert (
        figures["rate"] == 0.0 and figures["n"] == 2
    )  # neither constrained prompt passes all of its checks
    assert figures["by_kind"] == {"lowercase": 0.5, "no_commas": 0.0}


def test_perplexity_equals_an_independent_computation(tiny_model_dir):
    from instructrl.batches import ptx_examples

    ppl, chunks = evaluate.perplexity(
        str(tiny_model_dir), chunks=3, length=32, seed=0, device="cpu"
    )
    tok = models.load_tokenizer(str(tiny_model_dir))
    model = models.load_policy(str(tiny_model_dir))
    total, count, per_chunk = 0.0, 0, []
    for e in ptx_examples(tok, n=3, max_length=32, seed=0, split="eval"):
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([e.input_ids])).logits[0], -1)
        nll = [-logp[t - 1, e.input_ids[t]].item() for t in range(1, len(e.input_ids))]
        per_chunk.append(sum(nll) / len(nll))
        total += sum(nll)
        count += len(nll)
    assert ppl == pytest.approx(math.exp(total / count), rel=1e-5)
    assert chunks == pytest.approx(per_chunk, rel=1e-5)  # one batch of 3 against one at a time


def test_eval_end_to_end_on_tiny_models(tiny_model_dir, tmp_path):
    from instructrl.testing import make_tiny_model

    other = make_tiny_model(tmp_path / "other", seed=1)
    cfg = load_config(
        EvalConfig,
        [
            f"policies=base:{tiny_model_dir},sft:{other}",
            "baseline=sft",
            "limit=6",
            f"out={tmp_path / 'eval'}",
            "sampling.max_new_tokens=6",
            "ppl_chunks=2",
            "ppl_length=32",
            "agreement=false",
        ],
    )
    out = evaluate.run(cfg)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["win_rates"]) == {"base"} and set(summary["win_rates"]["base"]) == {
        "heldout",
        "train",
    }
    assert summary["win_rates"]["base"]["heldout"]["n"] == 6
    assert set(summary["perplexity"]) == {"base", "sft"} and all(
        v > 1 for v in summary["perplexity"].values()
    )
    cached = sorted((out / "generations").iterdir())
    # people ranked the two policies' generations in the web app (exported with `models`):
    # base first on 4 prompts, sft first on 1, a tie on 1 -> (4 + 0.5) / 6
    gens = {f.name.split("-")[0]: read_records(f, "sample") for f in cached}
    rankings = [[0, 1]] * 4 + [[1, 0], [[0, 1]]]
    human = [
        {
            "prompt": a.prompt,
            "responses": [a.response, b.response],
            "ranking": ranking,
            "models": ["base", "sft"],
        }
        for a, b, ranking in zip(gens["base"][:6], gens["sft"][:6], rankings, strict=True)
    ]
    (tmp_path / "human.jsonl").write_text("".join(json.dumps(h) + "\n" for h in human))
    cfg.human = str(tmp_path / "human.jsonl")
    evaluate.run(cfg)  # a second run reuses every generation
    assert sorted((out / "generations").iterdir()) == cached
    summary = json.loads((out / "summary.json").read_text())
    assert summary["win_rates"]["base"]["human"]["win_rate"] == pytest.approx(4.5 / 6)
    assert summary["win_rates"]["base"]["human"]["n"] == 6
    assert "<td>human</td>" in (out / "report.html").read_text()
    # and rated them: Likert and flags per policy beside the panel's
    ratings = [
        {"prompt_id": s.prompt_id, "response": s.response, "likert": likert, "model": name}
        for name, likert in (("base", 6), ("sft", 3))
        for s in gens[name][:2]
    ] + [{"prompt_id": gens["sft"][0].prompt_id, "response": "?", "likert": 5, "model": "sft"}]
    (tmp_path / "ratings.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ratings))
    cfg.human_ratings = str(tmp_path / "ratings.jsonl")
    evaluate.run(cfg)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["human_likert"]["base"]["mean"] == 6.0
    assert summary["human_likert"]["sft"]["mean"] == pytest.approx(11 / 3)
    assert summary["human_likert"]["sft"]["n"] == 3 and set(summary["human_flags"]) == {
        "base",
        "sft",
    }
    assert summary["likert"]["base"]["n"] == 6  # the panel's figures stay
    html = (out / "report.html").read_text()
    assert "<td>people</td>" in html
    # report_to: summary.json's figures as tracker scalars (step 0)
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg.report_to = ["tensorboard"]
    evaluate.run(cfg)
    summary = json.loads((out / "summary.json").read_text())
    (events,) = {p.parent for p in (out / "tracking" / "eval").glob("events.out.tfevents.*")}
    acc = EventAccumulator(str(events))
    acc.Reload()
    logged = {tag: acc.Scalars(tag)[0].value for tag in acc.Tags()["scalars"]}
    assert logged["win_rates.base.heldout.win_rate"] == pytest.approx(
        summary["win_rates"]["base"]["heldout"]["win_rate"], rel=1e-6
    )
    assert logged["perplexity.sft"] == pytest.approx(summary["perplexity"]["sft"], rel=1e-6)
    assert logged.keys() == evaluate.summary_scalars(summary).keys()
    (chart,) = re.findall(r'alt="metadata from people" src="data:image/png;base64,([^"]+)"', html)
    assert base64.b64decode(chart).startswith(b"\x89PNG")


def test_eval_with_several_samples_per_prompt(tiny_model_dir, rm_dir, tmp_path):
    """samples_per_prompt=2: each policy answers every prompt twice (consecutive draws); each
    draw is judged against the baseline's draw of the same index by the labeler its own key
    names; intervals resample prompts, and n counts prompts."""
    from instructrl.labelers import Item, Judge, Panel
    from instructrl.testing import make_tiny_model

    other = make_tiny_model(tmp_path / "other", seed=1)
    settings = [
        f"policies=base:{tiny_model_dir},sft:{other}",
        "baseline=sft",
        "limit=5",
        "adversarial_limit=3",
        f"reward={rm_dir}",
        "best_of=2",
        "sampling.max_new_tokens=6",
        "ppl_chunks=2",
        "ppl_length=32",
        "agreement=false",
    ]
    one = evaluate.run(load_config(EvalConfig, [*settings, f"out={tmp_path / 'one'}"]))
    cfg = load_config(EvalConfig, [*settings, "samples_per_prompt=2", f"out={tmp_path / 'two'}"])
    two = evaluate.run(cfg)
    gens = {
        f.name.split("-")[0]: read_records(f, "sample")
        for f in (two / "generations").iterdir()
        if "best-of" not in f.name
    }
    prompts, adversarial = evaluate.load_eval_prompts(cfg)
    ids = [p.id for p in prompts + adversarial]
    for samples in gens.values():
        assert [s.prompt_id for s in samples] == [i for i in ids for _ in range(2)]
    summary = json.loads((two / "summary.json").read_text())
    assert summary["prompts"] == 5 and summary["samples_per_prompt"] == 2
    # the win rate by hand: draw j of each prompt against the baseline's draw j, labelled
    # under the key "id" (j = 0) or "id#1" (j = 1)
    panel = Panel("heldout", seed=cfg.seed, judge=Judge())
    outcomes = []
    for i, p in enumerate(prompts):
        for j in range(2):
            a, b = gens["base"][2 * i + j], gens["sft"][2 * i + j]
            item = Item(p, [a.response, b.response], [a.finish_reason, b.finish_reason])
            item.key = p.id if j == 0 else f"{p.id}#1"
            (c,) = panel.rank([item])
            outcomes.append(evaluate._outcome(c.ranks(), 0, 1))
    heldout = summary["win_rates"]["base"]["heldout"]
    assert heldout["win_rate"] == pytest.approx(sum(outcomes) / 10)
    assert (heldout["n"], heldout["observations"]) == (5, 10)
    assert heldout["ci95"] == pytest.approx(
        list(stats.cluster_mean_ci(outcomes, [p.id for p in prompts for _ in range(2)]))
    )
    assert (summary["likert"]["base"]["n"], summary["likert"]["base"]["observations"]) == (5, 10)
    assert summary["rm_score"]["base"]["observations"] == 10
    # the RM score by hand: one full forward per test-prompt answer (the evaluation shares
    # each prompt's forward among the policies' answers)
    rm = models.load_reward_model(rm_dir)
    tok = models.load_tokenizer(rm_dir, padding_side="right")
    for name, samples in gens.items():
        by_hand = []
        for s in samples[:10]:
            row = rollout.encode_response(
                tok, s.prompt, s.response, max_length=2048, ended=s.finish_reason == "eos"
            )[0]
            row = torch.tensor([row])
            by_hand.append(rm(row, torch.ones_like(row)).item())
        assert summary["rm_score"][name]["mean"] == pytest.approx(sum(by_hand) / 10, abs=1e-5)
    assert summary["best_of"]["rm"]["n"] == 5  # against the baseline's first draw of each prompt
    # one sample a prompt: the figures of before, n prompts and no observations key
    first = json.loads((one / "summary.json").read_text())
    assert first["win_rates"]["base"]["heldout"]["n"] == 5
    assert "observations" not in first["win_rates"]["base"]["heldout"]
    assert "n = 5 prompts x 2" in (two / "report.html").read_text()
