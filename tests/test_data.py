"""The shipped data: validates, follows the paper's proportions, splits without leaks, rebuilds."""

from __future__ import annotations

import json
import sys
from collections import Counter

import pytest

from instructrl import constraints as C
from instructrl import data
from instructrl.data import build
from instructrl.records import prompt_as_text, read_records

PAPER_SHARES = {
    "generation": 45.6,
    "open_qa": 12.4,
    "brainstorming": 11.2,
    "chat": 8.4,
    "rewrite": 6.6,
    "summarization": 4.2,
    "classification": 3.5,
    "other": 3.5,
    "closed_qa": 2.6,
    "extract": 1.9,
}


def test_prompts_validate_and_follow_the_paper():
    prompts = read_records(data.PROMPTS, "prompt")
    assert len(prompts) >= 1500
    shares = Counter(p.category for p in prompts)
    for category, paper in PAPER_SHARES.items():
        ours = 100 * shares[category] / len(prompts)
        assert abs(ours - paper) < 3.0, f"{category}: {ours:.1f} % vs the paper's {paper} %"
    assert sum(1 for p in prompts if p.constraints) / len(prompts) >= 0.30
    assert {p.split for p in prompts} == {"train", "val", "test"}


def test_references_satisfy_their_constraints_and_tasks_carry_their_data():
    for p in data.load_prompts():
        assert p.reference, p.id
        if p.constraints:
            assert all(C.check_all(p.constraints, p.reference)), (p.id, p.constraints, p.reference)
        if p.category in ("closed_qa", "extract"):
            assert p.extra.get("answers"), p.id
        if p.category in ("closed_qa", "summarization", "extract", "rewrite"):
            assert p.extra.get("passage") and p.extra["passage"] in prompt_as_text(p.prompt), p.id
        for answer in p.extra.get("answers", []) if p.category == "closed_qa" else []:
            assert answer.lower() in p.extra["passage"].lower(), (p.id, answer)


def test_no_prompt_text_crosses_splits():
    by_group: dict[str, set[str]] = {}
    by_text: dict[str, set[str]] = {}
    for p in data.load_prompts():
        by_group.setdefault(p.extra["group"], set()).add(p.split)
        # the request without its constraint sentences: variants of one request share a split
        base = json.dumps(p.prompt)
        for c in p.constraints or []:
            base = base.replace(" " + json.dumps(C.instruction(c))[1:-1], "")
        by_text.setdefault(base, set()).add(p.split)
    assert all(len(s) == 1 for s in by_group.values())
    assert all(len(s) == 1 for s in by_text.values())


def test_adversarial_set():
    adv = read_records(data.ADVERSARIAL, "prompt")
    assert len(adv) >= 100
    kinds = Counter(p.extra["adversarial"]["type"] for p in adv)
    assert set(kinds) == {"harmful", "toxic", "false_premise"} and min(kinds.values()) >= 20
    train_texts = {prompt_as_text(p.prompt) for p in data.load_prompts()}
    assert not train_texts & {prompt_as_text(p.prompt) for p in adv}


def test_heldout_text():
    manifest = data.manifest()["heldout_text"]
    assert manifest["tokens"] >= 200_000 and "PSF" in manifest["licence"]
    docs = data.load_heldout_text()
    assert {d["split"] for d in docs} == {"ptx", "eval"}
    # the regression text comes from another source than the ptx mix (not circular)
    sources = {s: {d["source"] for d in docs if d["split"] == s} for s in ("ptx", "eval")}
    assert sources["eval"] and not sources["eval"] & sources["ptx"]
    assert len({d["id"] for d in docs}) == len(docs)
    prompts = " ".join(prompt_as_text(p.prompt) for p in data.load_prompts()[:200])
    assert not any(d["text"][:200] in prompts for d in docs)


def test_builder_is_deterministic(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "count_tokens", lambda docs: -1)  # no model needed for this check
    assert build.main(["--out", str(tmp_path)]) == 0
    for name in ("prompts.jsonl", "adversarial.jsonl"):
        assert (tmp_path / name).read_bytes() == (data.DATA_DIR / name).read_bytes(), name
    if data.manifest()["heldout_text"]["python"] == sys.version.split()[0]:
        assert (tmp_path / "heldout_text.jsonl").read_bytes() == data.HELDOUT_TEXT.read_bytes()


def test_stats_json(capsys):
    from instructrl.cli import main

    assert main(["data", "stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["prompts"] == len(data.load_prompts())
    assert sum(stats["by_category"].values()) == stats["prompts"]
    assert stats["constraint_kinds"] >= 15 and stats["heldout_text_tokens"] >= 200_000


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_every_split_has_known_answer_prompts(split):
    assert sum(1 for p in data.load_prompts(split) if p.extra.get("answers")) >= 15
