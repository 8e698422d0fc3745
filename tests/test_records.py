"""Record validation: exact path:line messages, round trips, adapters."""

from __future__ import annotations

import json

import pytest

from instructrl.errors import RecordError
from instructrl.records import Comparison, read_records, write_records


def write_lines(path, lines, *, newline_at_end=True):
    text = "\n".join(json.dumps(x) if not isinstance(x, str) else x for x in lines)
    path.write_text(text + ("\n" if newline_at_end else ""), encoding="utf-8")
    return path


def first_error(path, kind=None):
    with pytest.raises(RecordError) as e:
        read_records(path, kind)
    return e.value.problems[0]


def comp(ranking, k=4, **extra):
    return {
        "prompt": "Name a fruit.",
        "responses": [f"r{i}" for i in range(k)],
        "ranking": ranking,
        **extra,
    }


def test_ranking_not_a_permutation(tmp_path):
    lines = [comp([0, 1, 2, 3])] * 16 + [comp([0, 0, 2, 3])]
    path = write_lines(tmp_path / "prompts.jsonl", lines)
    assert (
        first_error(path) == f"{path}:17: ranking: expected a permutation of 0..3, got [0, 0, 2, 3]"
    )


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (comp([0], k=1), "responses: expected 2 to 9 responses, got 1"),
        (comp(list(range(10)), k=10), "responses: expected 2 to 9 responses, got 10"),
        (
            {"prompt": "x", "responses": ["a", 3], "ranking": [0, 1]},
            "responses[1]: expected a string, got 3",
        ),
        ({"responses": ["a", "b"], "ranking": [0, 1]}, "prompt: missing required field"),
        (
            comp([[0, 1], []], k=2),
            "ranking: expected a permutation of 0..1 (tie groups non-empty), got [[0, 1], []]",
        ),
        (
            {"prompt": "x", "responses": ["a", "b"], "ranking": [0, 1], "finish_reasons": ["eos"]},
            'finish_reasons: expected a list of 2 finish reasons (one per response), got ["eos"]',
        ),
        (
            {
                "prompt": "x",
                "responses": ["a", "b"],
                "ranking": [0, 1],
                "finish_reasons": ["eos", "cut"],
            },
            'finish_reasons[1]: expected one of eos, length, stop, got "cut"',
        ),
    ],
)
def test_comparison_errors(tmp_path, record, message):
    path = write_lines(tmp_path / "c.jsonl", [record])
    assert first_error(path, "comparison") == f"{path}:1: {message}"


def test_prompt_errors(tmp_path):
    path = write_lines(
        tmp_path / "p.jsonl",
        [
            {"id": "a", "prompt": "hi"},
            {"id": "b", "prompt": "hi", "split": "dev"},
            {"id": "a", "prompt": "again"},
            {"id": "c", "prompt": [{"role": "robot", "content": "x"}]},
            {"id": "d", "prompt": [{"role": "user", "content": 5}]},
            {"id": "", "prompt": "x"},
            {"id": "e", "prompt": "x", "constraints": [{"nope": 1}]},
        ],
    )
    with pytest.raises(RecordError) as e:
        read_records(path, "prompt")
    assert e.value.problems == [
        f'{path}:2: split: expected one of train, val, test, got "dev"',
        f"{path}:3: id: duplicate prompt id 'a' (first at line 1)",
        f'{path}:4: prompt[0].role: expected one of system, user, assistant, got "robot"',
        f"{path}:5: prompt[0].content: expected a string, got 5",
        f"{path}:6: id: expected a non-empty string, got an empty one",
        f'{path}:7: constraints[0]: expected an object with a "kind" string, got {{"nope": 1}}',
    ]


def test_rating_and_sample_errors(tmp_path):
    path = write_lines(
        tmp_path / "r.jsonl",
        [
            {"prompt_id": "p", "response": "x", "likert": 8},
            {"prompt_id": "p", "response": "x", "likert": 3, "flags": {"rude": True}},
            {"prompt_id": "p", "response": "x", "likert": 3, "flags": {"hallucination": "yes"}},
            {"prompt_id": "p", "response": "x", "likert": True},
        ],
    )
    with pytest.raises(RecordError) as e:
        read_records(path, "rating")
    problems = e.value.problems
    assert problems[0] == f"{path}:1: likert: expected an integer from 1 to 7, got 8"
    assert problems[1].startswith(
        f"{path}:2: flags.rude: expected one of fails_to_follow_instruction,"
    )
    assert problems[2] == f'{path}:3: flags.hallucination: expected true or false, got "yes"'
    assert problems[3] == f"{path}:4: likert: expected an integer from 1 to 7, got true"
    path = write_lines(
        tmp_path / "s.jsonl",
        [
            {
                "prompt_id": "p",
                "prompt": "q",
                "response": "x",
                "model": "m",
                "finish_reason": "done",
            },
        ],
    )
    assert (
        first_error(path)
        == f'{path}:1: finish_reason: expected one of eos, length, stop, got "done"'
    )


def test_truncated_last_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "a", "resp', encoding="utf-8")
    assert first_error(path) == (
        f"{path}:2: expected a JSON object, got invalid JSON: Unterminated string starting at "
        f"at column 17 (the last line looks truncated)"
    )


def test_non_utf8_byte(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"prompt": "a", "response": "b"}\n{"prompt": "caf\xe9", "response": "b"}\n')
    assert first_error(path) == f"{path}:2: expected UTF-8 text, got byte 0xe9 at column 16"


def test_not_an_object_and_empty_file(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", ["[1, 2]"])
    assert first_error(path, "demonstration") == f"{path}:1: expected a JSON object, got [1, 2]"
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n\n")
    assert (
        first_error(empty, "prompt")
        == f"{empty}: expected at least one prompt record, found none (empty file)"
    )


def test_error_count_is_capped_but_total_reported(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [{"prompt": "x"}] * 30)
    with pytest.raises(RecordError) as e:
        read_records(path, "demonstration")
    assert len(e.value.problems) == 20 and e.value.total == 30
    assert str(e.value).endswith("... and 10 more error(s)")


def test_round_trip_keeps_unknown_keys(tmp_path):
    rows = [
        {
            "id": "p1",
            "prompt": "hi",
            "category": "chat",
            "split": "train",
            "source": {"a": [1, 2]},
            "z": None,
        },
        {
            "id": "p2",
            "prompt": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
            ],
        },
    ]
    src = write_lines(tmp_path / "in.jsonl", rows)
    out = write_records(tmp_path / "out.jsonl", read_records(src))
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows
    comps = [
        comp([[0, 2], 1, 3], labeler="L1", time_s=12.5),
        {**comp([1, 0, 2, 3]), "finish_reasons": ["eos", "length", "stop", "eos"]},
    ]
    out = write_records(
        tmp_path / "c.jsonl", read_records(write_lines(tmp_path / "cin.jsonl", comps))
    )
    assert [json.loads(line) for line in out.read_text().splitlines()] == comps


def test_pairwise_adapter_is_k2(tmp_path):
    path = write_lines(
        tmp_path / "pairs.jsonl", [{"prompt": "q", "chosen": "good", "rejected": "bad", "id": 7}]
    )
    [c] = read_records(path)
    assert isinstance(c, Comparison)
    assert (c.k, c.responses, c.ranking, c.extra) == (2, ["good", "bad"], [0, 1], {"id": 7})
    assert c.pairs() == [(0, 1)]


def test_prompt_completion_adapter(tmp_path):
    path = write_lines(tmp_path / "pc.jsonl", [{"prompt": "q", "completion": "a"}])
    [d] = read_records(path)
    assert (d.kind, d.prompt, d.response) == ("demonstration", "q", "a")


def test_ranks_and_pairs_with_ties():
    # ranking [2, [0, 3], 1]: 2 best, 0 and 3 tied second, 1 last
    c = Comparison(prompt="q", responses=["a", "b", "c", "d"], ranking=[2, [0, 3], 1])
    assert c.ranks() == [1, 2, 0, 1]
    assert sorted(c.pairs()) == [(0, 1), (2, 0), (2, 1), (2, 3), (3, 1)]  # C(4,2) = 6 minus the tie


def test_write_is_atomic(tmp_path, monkeypatch):
    path = write_lines(tmp_path / "d.jsonl", [{"prompt": "a", "response": "old"}])

    def boom():
        yield {"prompt": "a", "response": "new"}
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_records(path, boom())
    assert json.loads(path.read_text())["response"] == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["d.jsonl"]
