"""Importers: small files in each foreign shape, written here, read back as our records."""

from __future__ import annotations

import json

import pytest

from instructrl import cli, exporters, importers
from instructrl.errors import UserError
from instructrl.records import Comparison, read_records

HH_CHOSEN = "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: And 3+3?\n\nAssistant: 6."
HH_REJECTED = (
    "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: And 3+3?\n\nAssistant: 7, I think."
)


def test_hh_conversations_split_at_the_last_assistant_turn():
    prompt, response = importers.split_last_turn(HH_CHOSEN, "chosen")
    assert response == "6."
    assert prompt == [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And 3+3?"},
    ]
    assert importers.split_last_turn("\n\nHuman: Hi\n\nAssistant: Hello!", "c") == ("Hi", "Hello!")
    with pytest.raises(importers.Skip, match="ends with an assistant turn"):
        importers.split_last_turn("\n\nHuman: Hi", "c")


def test_ranking_from_scores_groups_ties():
    assert importers.ranking_from_scores([7.0, 9.0, 7.0, 2.0]) == [1, [0, 2], 3]
    with pytest.raises(importers.Skip, match="tied"):
        importers.ranking_from_scores([5.0, 5.0])


def test_datasets_folder_parquet_and_json_in_every_preference_shape(tmp_path):
    datasets = pytest.importorskip("datasets")
    pairs = datasets.Dataset.from_list(
        [
            {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."},
            {"prompt": "Say hi", "chosen": "Hi!", "rejected": "Hi!"},  # no preference: skipped
        ]
    )
    pairs.save_to_disk(str(tmp_path / "pairs"))
    got = importers.import_records("datasets", tmp_path / "pairs")
    assert [(c.prompt, c.responses, c.ranking) for c in got.records] == [
        ("Capital of France?", ["Paris.", "Lyon."], [0, 1])
    ]
    assert got.rows == 2 and got.skipped == [
        f"{tmp_path / 'pairs'}:row 2: chosen and rejected are the same text: no preference"
    ]

    # TRL's conversational form: prompt and answers as messages, in a DatasetDict
    convo = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(
                [
                    {
                        "prompt": [{"role": "user", "content": "2+2?"}],
                        "chosen": [{"role": "assistant", "content": "4"}],
                        "rejected": [{"role": "assistant", "content": "5"}],
                    }
                ]
            )
        }
    )
    convo.save_to_disk(str(tmp_path / "convo"))
    (c,) = importers.import_records("datasets", tmp_path / "convo").records
    assert (c.prompt, c.responses) == ([{"role": "user", "content": "2+2?"}], ["4", "5"])

    hh = datasets.Dataset.from_list([{"chosen": HH_CHOSEN, "rejected": HH_REJECTED}])
    hh.to_parquet(str(tmp_path / "hh.parquet"))
    (c,) = importers.import_records("datasets", tmp_path / "hh.parquet").records
    assert c.responses == ["6.", "7, I think."] and c.prompt[-1]["content"] == "And 3+3?"

    uf = [
        {
            "instruction": "Name a colour.",
            "completions": [
                {"response": "Red.", "overall_score": 7.0},
                {"response": "Blue.", "overall_score": 9.0},
                {"response": "Green.", "overall_score": 7.0},
                {"response": "A car.", "overall_score": 2.0},
            ],
        },
        {"instruction": "x", "completions": [{"response": "a", "overall_score": 5}] * 2},
    ]
    (tmp_path / "uf.jsonl").write_text("".join(json.dumps(r) + "\n" for r in uf))
    got = importers.import_records(
        "datasets", tmp_path / "uf.jsonl", columns={"prompt": "instruction"}
    )
    (c,) = got.records
    assert c.responses == ["Red.", "Blue.", "Green.", "A car."]
    assert c.ranking == [1, [0, 2], 3] and c.pairs() == [(0, 3), (1, 0), (1, 2), (1, 3), (2, 3)]
    assert got.skipped == [f"{tmp_path / 'uf.jsonl'}:row 2: every response is tied: no preference"]


def test_datasets_demonstrations_from_completions_and_messages(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(
        [{"question": "Hi?", "completion": "Hello.", "annotator": "ann"}]
    ).save_to_disk(str(tmp_path / "pc"))
    (d,) = importers.import_records(
        "datasets",
        tmp_path / "pc",
        columns={"prompt": "question", "labeler": "annotator"},
        shape="completion",
    ).records
    assert (d.kind, d.prompt, d.response, d.labeler) == ("demonstration", "Hi?", "Hello.", "ann")
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
    ]
    datasets.Dataset.from_list([{"messages": msgs}]).save_to_disk(str(tmp_path / "m"))
    (d,) = importers.import_records("datasets", tmp_path / "m").records
    assert d.prompt == msgs[:2] and d.response == "Hello."


def test_unknown_columns_say_what_was_expected(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([{"q": "a", "good": "b", "bad": "c"}]).save_to_disk(
        str(tmp_path / "d")
    )
    with pytest.raises(
        UserError, match=r"cannot tell the shape from the columns \['bad', 'good', 'q'\]"
    ):
        importers.import_records("datasets", tmp_path / "d")
    got = importers.import_records(
        "datasets",
        tmp_path / "d",
        columns={"prompt": "q", "chosen": "good", "rejected": "bad"},
    )
    assert got.records[0].responses == ["b", "c"]


def labelstudio_export():
    items = [
        {"id": "a", "title": "A", "body": "Paris."},
        {"id": "b", "title": "B", "body": "Lyon."},
        {"id": "c", "title": "C", "body": "Paris, on the Seine."},
        {"id": "d", "title": "D", "body": "Bananas."},
    ]
    data = {"prompt": "Capital of France?", "items": items, "answer1": "Yes.", "answer2": "No."}
    return [
        {
            "id": 11,
            "data": data,
            "annotations": [
                {  # buckets: best = {c, a} (a tie), worst = {d}; b left unplaced
                    "id": 1,
                    "completed_by": 5,
                    "result": [
                        {
                            "type": "ranker",
                            "from_name": "rank",
                            "to_name": "results",
                            "value": {"ranker": {"best": ["c", "a"], "worst": ["d"], "_": ["b"]}},
                        }
                    ],
                },
                {  # no buckets: the new order under the tag's name
                    "id": 2,
                    "completed_by": {"id": 6, "email": "lee@example.org"},
                    "result": [
                        {"type": "ranker", "value": {"ranker": {"rank": ["b", "a", "d", "c"]}}}
                    ],
                },
                {  # the older Ranker result: items with weights
                    "id": 3,
                    "completed_by": 7,
                    "result": [
                        {"type": "ranker", "value": {"items": ["d", "a"], "weights": [0.9, 0.1]}}
                    ],
                },
                {"id": 4, "completed_by": 8, "was_cancelled": True, "result": []},
            ],
        },
        {
            "id": 12,
            "data": {"prompt": "Is it raining?", "left": "Yes.", "right": "I cannot know."},
            "annotations": [
                {
                    "id": 5,
                    "completed_by": 5,
                    "result": [
                        {
                            "type": "pairwise",
                            "to_name": ["left", "right"],
                            "value": {"selected": "right"},
                        }
                    ],
                }
            ],
        },
    ]


def test_labelstudio_ranker_buckets_ties_pairwise_and_cancelled(tmp_path):
    path = tmp_path / "ls.json"
    path.write_text(json.dumps(labelstudio_export()))
    got = importers.import_records("labelstudio", path, buckets=["best", "worst"])
    by = {c.labeler: c for c in got.records if c.prompt_id == "11"}
    bucketed = by["5"]
    assert bucketed.responses == ["Paris, on the Seine.", "Paris.", "Bananas."]
    assert bucketed.ranking == [[0, 1], 2] and bucketed.prompt_id == "11"
    ordered = by["lee@example.org"]
    assert ordered.responses == ["Lyon.", "Paris.", "Bananas.", "Paris, on the Seine."]
    assert ordered.ranking == [0, 1, 2, 3]
    assert (by["7"].responses, by["7"].ranking) == (["Bananas.", "Paris."], [0, 1])
    (pairwise,) = [c for c in got.records if c.prompt_id == "12"]
    assert pairwise.responses == ["Yes.", "I cannot know."] and pairwise.ranking == [1, 0]
    assert got.rows == 5 and got.skipped == [
        f"{path}:task 11 annotation 4: cancelled (skipped by the annotator)"
    ]
    # a bucket the caller did not name is an explained skip, not a silent drop
    got = importers.import_records("labelstudio", path, buckets=["best"])
    assert any("buckets ['worst'] are not in buckets=['best']" in s for s in got.skipped)


def argilla_flat():
    users = ["u1", "u2", "u3"]
    return [
        {
            "id": "r1",
            "status": "completed",
            "_server_id": "x",
            "prompt": "Capital of France?",
            "response-1": "Lyon.",
            "response-2": "Paris.",
            "response-3": "Bananas.",
            "ranking.responses": [
                ["response-2", "response-1", "response-3"],
                [
                    {"value": "response-1", "rank": 1},
                    {"value": "response-2", "rank": 1},
                    {"value": "response-3", "rank": 2},
                ],
                ["response-3", "response-2", "response-1"],
            ],
            "ranking.responses.users": users,
            "ranking.responses.status": ["submitted", "submitted", "draft"],
            "quality.responses": [6],
            "quality.responses.users": ["u1"],
            "quality.responses.status": ["submitted"],
            "response": "Paris.",
        }
    ]


def test_argilla_flattened_export_and_to_disk_folder(tmp_path):
    path = tmp_path / "argilla.json"
    path.write_text(json.dumps(argilla_flat()))
    got = importers.import_records("argilla", path)
    comparisons = [r for r in got.records if r.kind == "comparison"]
    assert [(c.labeler, c.responses, c.ranking) for c in comparisons] == [
        ("u1", ["Paris.", "Lyon.", "Bananas."], [0, 1, 2]),
        ("u2", ["Lyon.", "Paris.", "Bananas."], [[0, 1], 2]),
    ]
    (rating,) = [r for r in got.records if r.kind == "rating"]
    assert (rating.likert, rating.response, rating.labeler) == (6, "Paris.", "u1")
    assert got.rows == 4 and got.skipped == [
        f"{path}:record 1 ranking by u3: status draft (only submitted responses are imported)"
    ]
    # the nested form (records.to_list(), Dataset.to_disk's records.json) gives the same
    nested = [
        {
            "id": "r1",
            "fields": {"prompt": "Capital of France?", "a": "Lyon.", "b": "Paris."},
            "responses": {"ranking": [{"value": ["b", "a"], "user_id": "u1"}]},
        }
    ]
    (tmp_path / "disk").mkdir()
    (tmp_path / "disk" / "records.json").write_text(json.dumps(nested))
    (c,) = importers.import_records("argilla", tmp_path / "disk").records
    assert (c.responses, c.ranking, c.labeler) == (["Paris.", "Lyon."], [0, 1], "u1")
    # options map option values to the fields holding their text
    nested[0]["responses"]["ranking"][0]["value"] = ["reply-b", "reply-a"]
    (tmp_path / "disk" / "records.json").write_text(json.dumps(nested))
    got = importers.import_records("argilla", tmp_path / "disk")
    assert "ranking option 'reply-b' names no text field" in got.skipped[0]
    (c,) = importers.import_records(
        "argilla", tmp_path / "disk", options={"reply-a": "a", "reply-b": "b"}
    ).records
    assert c.responses == ["Paris.", "Lyon."]


def test_cli_import_writes_valid_records_and_lists_what_it_skipped(tmp_path, capsys):
    path = tmp_path / "ls.json"
    path.write_text(json.dumps(labelstudio_export()))
    out = tmp_path / "comparisons.jsonl"
    rc = cli.main(["import", "labelstudio", str(path), f"out={out}", "buckets=[best,worst]"])
    assert rc == 0
    records = read_records(out, "comparison")  # what every stage reads
    assert len(records) == 4
    skipped = (tmp_path / "comparisons.jsonl.skipped.txt").read_text().splitlines()
    assert skipped == [f"{path}:task 11 annotation 4: cancelled (skipped by the annotator)"]
    # several kinds in one source: the user picks one
    argilla = tmp_path / "a.json"
    argilla.write_text(json.dumps(argilla_flat()))
    rc = cli.main(["import", "argilla", str(argilla), f"out={tmp_path / 'x.jsonl'}"])
    assert (
        rc == 2 and "2 comparison, 1 rating records; pick one with kind=" in capsys.readouterr().err
    )
    rc = cli.main(["import", "argilla", str(argilla), f"out={tmp_path / 'r.jsonl'}", "kind=rating"])
    assert rc == 0 and len(read_records(tmp_path / "r.jsonl", "rating")) == 1
    rc = cli.main(["import", "argilla", str(tmp_path / "none.json"), f"out={out}"])
    assert rc == 2 and "no such file or folder" in capsys.readouterr().err


def test_preference_pairs_are_every_untied_pair_and_import_back(tmp_path):
    comparisons = [
        Comparison(prompt="Name a colour.", responses=["Red.", "Blue.", "Green.", "A car."],
                   ranking=[1, [0, 2], 3], prompt_id="p1", labeler="ann"),
        Comparison(prompt=[{"role": "user", "content": "2+2?"}], responses=["4", "5"],
                   ranking=[0, 1], prompt_id="p2"),
    ]  # fmt: skip
    rows = exporters.preference_pairs(comparisons)
    assert [(r["chosen"], r["rejected"]) for r in rows[:5]] == [
        ("Red.", "A car."),
        ("Blue.", "Red."),
        ("Blue.", "Green."),
        ("Blue.", "A car."),
        ("Green.", "A car."),
    ]  # fmt: skip  -- C(4, 2) = 6 pairs, one of them tied
    assert rows[5]["chosen"] == [{"role": "assistant", "content": "4"}]  # TRL's chat form
    assert rows[0]["labeler"] == "ann" and rows[5]["prompt_id"] == "p2"
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pytest.importorskip("datasets")
    back = importers.import_records("datasets", path).records
    text = lambda a: a if isinstance(a, str) else a[-1]["content"]  # noqa: E731
    assert [c.responses for c in back] == [[text(r["chosen"]), text(r["rejected"])] for r in rows]
    assert back[0].labeler == "ann" and back[0].prompt_id == "p1"


@pytest.mark.parametrize("fmt", ["datasets", "parquet"])
def test_tables_keep_ties_as_ranks_and_one_prompt_type(tmp_path, fmt):
    datasets = pytest.importorskip("datasets")
    comparisons = [
        Comparison(prompt="Name a colour.", responses=["Red.", "Blue.", "Green."],
                   ranking=[1, [0, 2]]),
        Comparison(prompt=[{"role": "user", "content": "2+2?"}], responses=["4", "5"],
                   ranking=[0, 1]),
    ]  # fmt: skip
    written = exporters.write_table(exporters.table_rows(comparisons), tmp_path / "c", fmt)
    table = (
        datasets.load_from_disk(str(written))
        if fmt == "datasets"
        else datasets.load_dataset("parquet", data_files=str(written))["train"]
    )
    assert table["ranks"] == [[1, 0, 1], [0, 1]]
    assert table["prompt"][0] == [{"role": "user", "content": "Name a colour."}]
