"""Every constraint kind on hand-written positive and negative examples, edge cases included."""

from __future__ import annotations

import random

import pytest

from instructrl import constraints as C
from instructrl.errors import UserError

# (constraint, response that satisfies it, response that violates it)
CASES = [
    ({"kind": "word_count", "relation": "at least", "n": 3}, "one two three", "one two"),
    ({"kind": "word_count", "relation": "less than", "n": 3}, "it's fine  \n", "one two three"),
    (
        {"kind": "sentence_count", "relation": "exactly", "n": 2},
        "First one. Second one!",
        "Only one.",
    ),
    ({"kind": "sentence_count", "relation": "at most", "n": 1}, "Ein Satz über Käse.", "A. B. C."),
    ({"kind": "paragraph_count", "n": 2}, "Para one.\n\nPara two.\n", "Para one.\nStill one."),
    (
        {"kind": "include_keywords", "keywords": ["river", "Light"]},
        "The light on the River.",
        "The river only.",
    ),
    (
        {"kind": "forbidden_words", "forbidden": ["very"]},
        "Everything is great.",
        "It is Very good.",
    ),
    (
        {"kind": "keyword_frequency", "keyword": "sea", "relation": "at least", "n": 2},
        "Sea and sea.",
        "One sea, seas.",
    ),
    (
        {"kind": "letter_frequency", "letter": "z", "relation": "at least", "n": 2},
        "Zebra pizza",
        "zebra",
    ),
    ({"kind": "lowercase"}, "all quiet here, café.", "Not quiet."),
    ({"kind": "uppercase"}, "LOUD NOISES! 123", "LOUD noises"),
    (
        {"kind": "capital_word_frequency", "relation": "at least", "n": 2},
        "This is VERY VERY big.",
        "I am A fan.",
    ),
    ({"kind": "start_with", "phrase": "Sure."}, "  sure. Here it is.", "Here it is. Sure."),
    (
        {"kind": "end_with", "phrase": "That is all."},
        "Done. That is all.\n\n",
        "That is all. More.",
    ),
    ({"kind": "quotation"}, '"Quoted answer."  ', 'Quoted "answer".'),
    ({"kind": "quotation"}, "“Curly quotes.”", '"'),
    ({"kind": "json_format"}, '```json\n{"a": [1, 2]}\n```', "{'a': 1}"),
    ({"kind": "json_format"}, ' ["x"] ', ""),
    ({"kind": "bullet_count", "n": 2}, "* one\n- two\n", "* one\n* two\n* three"),
    (
        {"kind": "section_count", "marker": "SECTION", "n": 2},
        "SECTION 1\na\nSECTION 2\nb",
        "SECTION 1 only",
    ),
    ({"kind": "title"}, "<<Rain Song>>\nDrops.", "<< >\nno title"),
    ({"kind": "placeholder_count", "n": 2}, "Dear [name], at [address].", "Dear [name]."),
    ({"kind": "postscript", "marker": "P.S."}, "Body.\n\nP.S. See you.", "Body with P.S. inline."),
    ({"kind": "no_commas"}, "No commas here.", "One, two"),
    ({"kind": "no_commas"}, "", "全角，逗号"),
    (
        {"kind": "response_language", "language": "es"},
        "El gato es de la casa y no come.",
        "The cat is in the house.",
    ),
    (
        {"kind": "response_language", "language": "fr"},
        "Le chat est dans la maison et il dort.",
        "Hi.",
    ),
    (
        {"kind": "repeat_prompt", "prompt_text": "Name a colour."},
        "Name a colour. Blue.",
        "Blue. Name a colour.",
    ),
    ({"kind": "two_responses"}, "Answer A.\n******\nAnswer B.", "Answer A.\n******\nAnswer A."),
    ({"kind": "two_responses"}, "x ****** y", "only one"),
    (
        {"kind": "highlighted_sections", "n": 2},
        "A *first* and *second* part.",
        "A *first* part and ** nothing.",
    ),
    ({"kind": "max_characters", "n": 10}, "short  \n", "much longer than ten"),
]


@pytest.mark.parametrize(
    ("constraint", "good", "bad"),
    CASES,
    ids=[f"{c['kind']}-{i}" for i, (c, _, _) in enumerate(CASES)],
)
def test_positive_and_negative(constraint, good, bad):
    assert C.check(constraint, good) is True
    assert C.check(constraint, bad) is False


def test_every_kind_has_examples_and_there_are_at_least_20():
    assert len(C.REGISTRY) >= 20
    assert {c["kind"] for c, _, _ in CASES} == set(C.REGISTRY)


@pytest.mark.parametrize("kind", sorted(C.REGISTRY))
def test_empty_response_fails_positive_requirements(kind):
    # An empty answer satisfies only constraints that forbid something (or cap a count).
    permissive = {
        "forbidden_words",
        "no_commas",
        "max_characters",
        "word_count",
        "sentence_count",
        "capital_word_frequency",
        "letter_frequency",
    }
    params = C.REGISTRY[kind].sample(random.Random(0))
    constraint = {"kind": kind, **params}
    if kind == "repeat_prompt":
        constraint["prompt_text"] = "Say hi."
    result = C.check(constraint, "")
    if kind not in permissive:
        assert result is False


@pytest.mark.parametrize("kind", sorted(C.REGISTRY))
def test_instruction_sentences(kind):
    params = C.REGISTRY[kind].sample(random.Random(1))
    text = C.instruction({"kind": kind, **params})
    assert text[0].isupper() and len(text) > 15


def test_word_and_sentence_splitting_by_hand():
    assert C.words("It's a well-known café, isn't it? 3 ways_to go") == [
        "It's",
        "a",
        "well",
        "known",
        "café",
        "isn't",
        "it",
        "3",
        "ways",
        "to",
        "go",
    ]
    assert C.sentences('Dr. Who. Yes!  "Quoted." Then\nnew line') == [
        "Dr.",
        "Who.",
        "Yes!",
        '"Quoted."',
        "Then",
        "new line",
    ]
    assert C.paragraphs("a\n \n\nb\n\n") == ["a", "b"]


def test_relations_by_hand():
    assert [C.compare(3, r, 3) for r in C.RELATIONS] == [True, True, False, True]
    with pytest.raises(UserError, match="relation"):
        C.compare(1, "about", 2)


def test_unknown_kind_and_bad_params_are_user_errors():
    with pytest.raises(UserError, match="constraint kind: expected one of"):
        C.check({"kind": "rhymes"}, "x")
    with pytest.raises(UserError, match="bad parameters"):
        C.check({"kind": "word_count", "n": 3}, "x")
    assert C.check_all(None, "x") == []


@pytest.mark.parametrize("kind", [k for k in C.FIXABLE])
def test_fixers_make_a_draft_satisfy_each_fixable_kind(kind):
    draft = "Rivers carry water to the sea, and they shape the land. Many towns grew beside them. People fish there."
    for seed in range(5):
        params = C.REGISTRY[kind].sample(random.Random(seed))
        constraint = {"kind": kind, **params}
        fixed = C.satisfy(draft, [constraint], prompt_text="Tell me about rivers.")
        assert fixed is not None, (constraint, fixed)
        assert C.check(constraint, fixed, prompt_text="Tell me about rivers.")


def test_satisfy_reports_conflicts():
    # Lowercase and an all-caps requirement cannot both hold.
    assert C.satisfy("Hello there.", [{"kind": "lowercase"}, {"kind": "uppercase"}]) is None
    assert C.satisfy("Hola.", [{"kind": "response_language", "language": "es"}]) is None
