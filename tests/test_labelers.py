"""The simulated panel: hand-computed agreement, constraint sensitivity over seeds, records."""

from __future__ import annotations

import json

import pytest

from instructrl import data, labelers
from instructrl.cli import main
from instructrl.config import LabelConfig
from instructrl.errors import RecordError
from instructrl.labelers import CALIBRATION_SAMPLES, Item, Panel, make_panel
from instructrl.records import Prompt, read_records
from instructrl.stages import label


@pytest.fixture(scope="module")
def judge():
    return labelers.Judge()


def test_groups_are_disjoint_and_deterministic():
    train, heldout = make_panel("train"), make_panel("heldout")
    assert not {lab.name for lab in train} & {lab.name for lab in heldout}
    assert make_panel("train") == train
    assert make_panel("train", seed=1) != train


def test_constraint_violation_ranked_below_in_most_seeds(judge):
    prompt = Prompt(
        id="c1",
        prompt="Describe the sea in two sentences. Write in lowercase letters only.",
        constraints=[{"kind": "lowercase"}],
        reference="the sea is vast and restless. its waves never stop moving.",
    )
    good = "the sea is wide and blue. its waves roll onto the shore all day."
    bad = "The Sea Is Wide And Blue. Its Waves Roll Onto The Shore All Day."
    item = Item(prompt=prompt, responses=[bad, good], finish_reasons=["eos", "eos"])
    wins = 0
    seeds = range(100)
    for seed in seeds:
        [comparison] = Panel("train", seed=seed, judge=judge).rank([item])
        wins += comparison.ranks()[1] < comparison.ranks()[0]
    rate = wins / len(seeds)
    assert rate >= 0.85, f"the constraint-satisfying response won only {rate:.0%} of seeds"


def test_flags_for_harm_and_false_premise(judge):
    [harm] = [p for p in data.load_adversarial() if p.extra["adversarial"]["type"] == "harmful"][:1]
    comply = "Step 1: wait until night. Step 2: check the lock. Step 3: go in quietly and take what you need."
    refuse = "I can't help with that, because it could hurt people. I'm happy to help with something safe."
    ratings = Panel("heldout", judge=judge).rate([Item(harm, [comply, refuse], ["eos", "eos"])])
    assert (
        ratings[0].flags["harmful_advice"]
        and ratings[0].flags["inappropriate_for_customer_assistant"]
    )
    assert not ratings[1].flags["harmful_advice"] and ratings[1].likert > ratings[0].likert
    premise = next(
        p
        for p in data.load_adversarial()
        if p.id and p.extra["adversarial"]["type"] == "false_premise" and p.extra.get("answers")
    )
    capital = premise.extra["answers"][0]
    accept = "Because it is the biggest and most important city in the country."
    correct = f"Actually, that is not right: the capital is {capital}."
    ratings = Panel("heldout", judge=judge).rate([Item(premise, [accept, correct], ["eos", "eos"])])
    assert ratings[0].flags["hallucination"] and not ratings[1].flags["hallucination"]


def test_demonstrations_follow_constraints_and_validate(tmp_path, judge):
    prompts = [p for p in data.load_prompts("train") if p.constraints][:30]
    source = tmp_path / "p.jsonl"
    source.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in prompts))
    out = label.run(
        LabelConfig(task="demonstrate", input=str(source), out=str(tmp_path / "demos.jsonl"))
    )
    demos = read_records(out, "demonstration")
    assert len(demos) == 30
    from instructrl import constraints as C

    by_id = {p.id: p for p in prompts}
    for d in demos:
        p = by_id[d.prompt_id]
        assert all(C.check_all(p.constraints, d.response, prompt_text=labelers._base_text(p))), (
            p.constraints,
            d.response,
        )
        assert d.labeler.startswith("train-")


def _samples(tmp_path, k_per_prompt):
    rows = []
    prompts = data.load_prompts("val")
    for i, k in enumerate(k_per_prompt):
        p = prompts[i]
        for j in range(k):
            rows.append(
                {
                    "prompt_id": p.id,
                    "prompt": p.prompt,
                    "response": f"{p.reference} Variant {j}." if j else p.reference,
                    "model": "m",
                    "finish_reason": "eos" if j % 2 == 0 else "length",
                }
            )
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_rank_and_rate_records(tmp_path):
    samples = _samples(tmp_path, [4, 9, 2])
    out = label.run(
        LabelConfig(
            task="rank", input=str(samples), out=str(tmp_path / "c.jsonl"), labelers_per_item=2
        )
    )
    comps = read_records(out, "comparison")
    assert [c.k for c in comps] == [4, 4, 9, 9, 2, 2]
    assert comps[0].labeler != comps[1].labeler
    again = label.run(
        LabelConfig(
            task="rank", input=str(samples), out=str(tmp_path / "c2.jsonl"), labelers_per_item=2
        )
    )
    assert again.read_text() == out.read_text()  # deterministic under the seed
    ratings = read_records(
        label.run(
            LabelConfig(
                task="rate", panel="heldout", input=str(samples), out=str(tmp_path / "r.jsonl")
            )
        ),
        "rating",
    )
    assert len(ratings) == 15 and all(1 <= r.likert <= 7 for r in ratings)
    assert all(r.labeler.startswith("heldout-") for r in ratings)


def test_rank_rejects_k_outside_range(tmp_path, capsys):
    samples = _samples(tmp_path, [4, 1])
    with pytest.raises(RecordError) as e:
        label.run(LabelConfig(task="rank", input=str(samples)))
    assert e.value.problems == [
        f"{samples}:5: prompt_id: expected 2 to 9 samples for {data.load_prompts('val')[1].id!r}, got 1"
    ]
    assert main(["label", "--task", "rank", "--input", str(samples)]) == 2
    assert "expected 2 to 9 samples" in capsys.readouterr().err


def test_agreement_json_on_calibration_samples(capsys):
    if not CALIBRATION_SAMPLES.is_file():
        pytest.skip("no calibration samples shipped")
    assert main(["label", "--agreement", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for group in ("train", "heldout"):
        r = result[group]
        assert 0.70 <= r["agreement"] <= 0.80, (group, r)
        assert r["ci95"][0] < r["agreement"] < r["ci95"][1] and r["pairs"] > 1000
