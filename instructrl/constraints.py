"""Verifiable instruction constraints, modelled on the IFEval taxonomy (Zhou et al., 2023).

Each kind is a pure `check(response, **params) -> bool`, an `instruction(**params) -> str` that
phrases it the way a person would add it to a request, and `sample(rng) -> params` used by the
data builder. A prompt record carries its constraints as `[{"kind": ..., **params}, ...]`.

Words and sentences are split with our own regexes (NLTK's punkt is not available offline).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from instructrl.errors import UserError

WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)
SENTENCE_END = re.compile(r"(?<=[.!?][\"'”’)\]])\s+|(?<=[.!?])\s+|\n+")
PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
BULLET = re.compile(r"^\s*[*-]\s+\S", re.MULTILINE)
PLACEHOLDER = re.compile(r"\[[^\[\]\n]+\]")
HIGHLIGHT = re.compile(r"\*[^\n*]+\*")
RELATIONS = ("at least", "at most", "less than", "exactly")
SEPARATOR = "******"

# Common function words per language, for a cheap offline language check.
STOPWORDS = {
    "en": "the and is are of to in that it you for with this was on be have not",
    "es": "el la los las de que y en un una es por con para no se del",
    "fr": "le la les de des et est un une que en du pour pas dans qui",
    "de": "der die das und ist nicht ein eine zu den mit von auf für sich",
    "it": "il la di che e un una per non sono con del della gli le",
}
STOPWORDS_SETS = {lang: set(words.split()) for lang, words in STOPWORDS.items()}
LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "fr": "French", "de": "German", "it": "Italian"}


def words(text: str) -> list[str]:
    return WORD.findall(text)


def sentences(text: str) -> list[str]:
    return [
        s
        for s in (part.strip() for part in SENTENCE_END.split(text.strip()))
        if s and WORD.search(s)
    ]


def paragraphs(text: str) -> list[str]:
    return [p for p in (part.strip() for part in PARAGRAPH_BREAK.split(text.strip())) if p]


def compare(count: int, relation: str, n: int) -> bool:
    if relation == "at least":
        return count >= n
    if relation == "at most":
        return count <= n
    if relation == "less than":
        return count < n
    if relation == "exactly":
        return count == n
    raise UserError(
        f"constraint relation: expected one of {', '.join(RELATIONS)}, got {relation!r}"
    )


def detect_language(text: str) -> str | None:
    """The language whose function words are most frequent; None for too little text."""
    tokens = [w.lower() for w in words(text)]
    if len(tokens) < 3:
        return None
    hits = {lang: sum(t in sw for t in tokens) for lang, sw in STOPWORDS_SETS.items()}
    best = max(hits, key=lambda lang: hits[lang])
    return best if hits[best] > 0 else None


@dataclass(frozen=True)
class Constraint:
    kind: str
    check: Callable[..., bool]
    instruction: Callable[..., str]
    sample: Callable[[random.Random], dict[str, Any]]


REGISTRY: dict[str, Constraint] = {}


def _register(
    kind: str, instruction: Callable[..., str], sample: Callable[[random.Random], dict[str, Any]]
):
    def wrap(check: Callable[..., bool]) -> Callable[..., bool]:
        REGISTRY[kind] = Constraint(kind, check, instruction, sample)
        return check

    return wrap


KEYWORDS = [
    "river",
    "light",
    "future",
    "garden",
    "music",
    "simple",
    "friend",
    "journey",
    "energy",
    "window",
]
LETTERS = "aeinorst"
PHRASES_START = ["Sure.", "Here is my answer:", "In short,", "Great question."]
PHRASES_END = ["Is there anything else I can help with?", "That is all.", "Thank you for reading."]


def _rel(rng: random.Random, lo: int, hi: int) -> dict[str, Any]:
    return {"relation": rng.choice(["at least", "at most", "less than"]), "n": rng.randint(lo, hi)}


@_register(
    "word_count", lambda relation, n: f"Answer in {relation} {n} words.", lambda r: _rel(r, 10, 60)
)
def word_count(response: str, *, relation: str, n: int) -> bool:
    return compare(len(words(response)), relation, n)


@_register(
    "sentence_count",
    lambda relation, n: f"Use {relation} {n} sentence{'s' * (n != 1)}.",
    lambda r: _rel(r, 1, 5),
)
def sentence_count(response: str, *, relation: str, n: int) -> bool:
    return compare(len(sentences(response)), relation, n)


@_register(
    "paragraph_count",
    lambda n: f"Write exactly {n} paragraphs separated by a blank line.",
    lambda r: {"n": r.randint(2, 3)},
)
def paragraph_count(response: str, *, n: int) -> bool:
    return len(paragraphs(response)) == n


@_register(
    "include_keywords",
    lambda keywords: "Include the words " + " and ".join(f'"{k}"' for k in keywords) + ".",
    lambda r: {"keywords": r.sample(KEYWORDS, 2)},
)
def include_keywords(response: str, *, keywords: list[str]) -> bool:
    present = {w.lower() for w in words(response)}
    return all(k.lower() in present for k in keywords)


@_register(
    "forbidden_words",
    lambda forbidden: "Do not use the words " + " or ".join(f'"{k}"' for k in forbidden) + ".",
    lambda r: {"forbidden": r.sample(["very", "really", "thing", "good", "nice", "just"], 2)},
)
def forbidden_words(response: str, *, forbidden: list[str]) -> bool:
    present = {w.lower() for w in words(response)}
    return not any(k.lower() in present for k in forbidden)


@_register(
    "keyword_frequency",
    lambda keyword, relation, n: f'Use the word "{keyword}" {relation} {n} time{"s" * (n != 1)}.',
    lambda r: {"keyword": r.choice(KEYWORDS), "relation": "at least", "n": r.randint(2, 3)},
)
def keyword_frequency(response: str, *, keyword: str, relation: str, n: int) -> bool:
    return compare(sum(w.lower() == keyword.lower() for w in words(response)), relation, n)


@_register(
    "letter_frequency",
    lambda letter, relation, n: f'Use the letter "{letter}" {relation} {n} times.',
    lambda r: {
        "letter": r.choice(LETTERS),
        "relation": r.choice(["at least", "less than"]),
        "n": r.randint(5, 20),
    },
)
def letter_frequency(response: str, *, letter: str, relation: str, n: int) -> bool:
    return compare(response.lower().count(letter.lower()), relation, n)


@_register(
    "lowercase", lambda: "Write your whole answer in lowercase letters, no capitals.", lambda r: {}
)
def lowercase(response: str) -> bool:
    return bool(response.strip()) and response == response.lower()


@_register("uppercase", lambda: "Write your whole answer in capital letters.", lambda r: {})
def uppercase(response: str) -> bool:
    return bool(response.strip()) and response == response.upper()


@_register(
    "capital_word_frequency",
    lambda relation, n: f"Use {relation} {n} words written in all capital letters.",
    lambda r: {"relation": r.choice(["at least", "at most"]), "n": r.randint(1, 4)},
)
def capital_word_frequency(response: str, *, relation: str, n: int) -> bool:
    count = sum(1 for w in words(response) if len(w) > 1 and w.isupper())
    return compare(count, relation, n)


@_register(
    "start_with",
    lambda phrase: f'Start your answer with "{phrase}"',
    lambda r: {"phrase": r.choice(PHRASES_START)},
)
def start_with(response: str, *, phrase: str) -> bool:
    return response.strip().lower().startswith(phrase.lower())


@_register(
    "end_with",
    lambda phrase: f'End your answer with the exact phrase "{phrase}" and nothing after it.',
    lambda r: {"phrase": r.choice(PHRASES_END)},
)
def end_with(response: str, *, phrase: str) -> bool:
    return response.strip().lower().endswith(phrase.lower())


@_register("quotation", lambda: "Wrap your entire answer in double quotation marks.", lambda r: {})
def quotation(response: str) -> bool:
    text = response.strip()
    return len(text) >= 2 and text[0] in '"“' and text[-1] in '"”'


@_register("json_format", lambda: "Format your entire answer as valid JSON.", lambda r: {})
def json_format(response: str) -> bool:
    text = response.strip()
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, re.DOTALL | re.IGNORECASE)
    if fence:
        text = fence.group(1)
    try:
        json.loads(text)
    except ValueError:
        return False
    return bool(text)


@_register(
    "bullet_count",
    lambda n: f"Answer with exactly {n} bullet points, each line starting with '* '.",
    lambda r: {"n": r.randint(2, 5)},
)
def bullet_count(response: str, *, n: int) -> bool:
    return len(BULLET.findall(response)) == n


@_register(
    "section_count",
    lambda marker, n: (
        f"Divide your answer into {n} sections, each starting with '{marker} X' (X is its number)."
    ),
    lambda r: {"marker": r.choice(["SECTION", "PART"]), "n": r.randint(2, 3)},
)
def section_count(response: str, *, marker: str, n: int) -> bool:
    found = re.findall(rf"^\s*{re.escape(marker)}\s+\d+", response, re.MULTILINE)
    return len(found) == n


@_register(
    "title",
    lambda: "Give your answer a title wrapped in double angle brackets, like <<my title>>.",
    lambda r: {},
)
def title(response: str) -> bool:
    return re.search(r"<<[^<>\n]+>>", response) is not None


@_register(
    "placeholder_count",
    lambda n: f"Include at least {n} placeholders in square brackets, such as [name].",
    lambda r: {"n": r.randint(1, 3)},
)
def placeholder_count(response: str, *, n: int) -> bool:
    return len(PLACEHOLDER.findall(response)) >= n


@_register(
    "postscript",
    lambda marker: f"At the end of your answer, add a postscript starting with {marker}",
    lambda r: {"marker": r.choice(["P.S.", "P.P.S"])},
)
def postscript(response: str, *, marker: str) -> bool:
    return re.search(rf"(^|\n)\s*{re.escape(marker)}", response) is not None


@_register("no_commas", lambda: "Do not use any commas in your answer.", lambda r: {})
def no_commas(response: str) -> bool:
    return "," not in response and "，" not in response


@_register(
    "response_language",
    lambda language: f"Answer only in {LANGUAGE_NAMES[language]}, no other language.",
    lambda r: {"language": r.choice(["es", "fr", "de"])},
)
def response_language(response: str, *, language: str) -> bool:
    return detect_language(response) == language


@_register(
    "repeat_prompt",
    lambda prompt_text: (
        "First repeat the request word for word without change, then give your answer."
    ),
    lambda r: {},
)
def repeat_prompt(response: str, *, prompt_text: str) -> bool:
    return response.strip().lower().startswith(prompt_text.strip().lower())


@_register(
    "two_responses",
    lambda: f"Give two different answers, separated by six asterisks ({SEPARATOR}).",
    lambda r: {},
)
def two_responses(response: str) -> bool:
    parts = [p.strip() for p in response.split(SEPARATOR)]
    return len(parts) == 2 and all(parts) and parts[0] != parts[1]


@_register(
    "highlighted_sections",
    lambda n: (
        f"Highlight at least {n} parts of your answer with markdown, like *highlighted part*."
    ),
    lambda r: {"n": r.randint(1, 3)},
)
def highlighted_sections(response: str, *, n: int) -> bool:
    return sum(1 for h in HIGHLIGHT.findall(response) if h.strip("* ")) >= n


@_register(
    "max_characters",
    lambda n: f"Keep your answer under {n} characters.",
    lambda r: {"n": r.choice([100, 150, 200, 300])},
)
def max_characters(response: str, *, n: int) -> bool:
    return len(response.strip()) < n


def _params(
    constraint: dict[str, Any], prompt_text: str | None
) -> tuple[Constraint, dict[str, Any]]:
    kind = constraint.get("kind")
    if kind not in REGISTRY:
        raise UserError(
            f"constraint kind: expected one of {', '.join(sorted(REGISTRY))}, got {kind!r}"
        )
    params = {k: v for k, v in constraint.items() if k != "kind"}
    if kind == "repeat_prompt":
        params.setdefault("prompt_text", prompt_text or "")
    return REGISTRY[kind], params


def check(constraint: dict[str, Any], response: str, *, prompt_text: str | None = None) -> bool:
    """Whether `response` satisfies one constraint record `{"kind": ..., **params}`."""
    spec, params = _params(constraint, prompt_text)
    try:
        return bool(spec.check(response, **params))
    except TypeError as e:
        raise UserError(f"constraint {spec.kind}: bad parameters {params}: {e}") from None


def instruction(constraint: dict[str, Any]) -> str:
    """The sentence that asks for the constraint, as appended to a prompt."""
    spec, params = _params(constraint, "")
    return spec.instruction(**params)


def check_all(
    constraints: list[dict[str, Any]] | None, response: str, *, prompt_text: str | None = None
) -> list[bool]:
    return [check(c, response, prompt_text=prompt_text) for c in constraints or []]


# ---------------------------------------------------------------------------------------------
# Fixers: edit a draft so it satisfies a constraint. The data builder uses them to make reference
# answers that follow their prompt's constraints, and the simulated panel uses them to edit its
# demonstrations (design.md, "Simulated labelers"). `None` means the kind cannot be fixed by an
# edit (e.g. answering in another language); such kinds are not sampled into shipped prompts.

PADDING = [
    "I hope this helps.",
    "Let me know if you would like more detail.",
    "Thanks for asking.",
    "That covers the main points.",
    "Feel free to ask a follow-up question.",
]


def _pad_sentences(text: str, count: int) -> str:
    extra = [PADDING[i % len(PADDING)] for i in range(max(0, count))]
    return " ".join([text.strip(), *extra]).strip()


def _first_words(text: str, n: int) -> str:
    pieces = re.findall(r"\S+", text)
    kept = []
    for piece in pieces:
        if len(words(" ".join([*kept, piece]))) > n:
            break
        kept.append(piece)
    out = " ".join(kept).rstrip(",;:")
    return out if out.endswith((".", "!", "?")) or not out else out + "."


def _fix_count(text: str, relation: str, n: int, count, shorten, lengthen) -> str:
    have = count(text)
    if relation in ("at most", "exactly") and have > n:
        text = shorten(text, n)
    elif relation == "less than" and have >= n:
        text = shorten(text, n - 1)
    if relation in ("at least", "exactly") and count(text) < n:
        text = lengthen(text, n)
    return text


def _fix_words(text: str, *, relation: str, n: int) -> str:
    def lengthen(t: str, target: int) -> str:
        for i in range(50):
            if len(words(t)) >= target:
                break
            t = _pad_sentences(t, 1) if i < len(PADDING) else t + " " + PADDING[i % len(PADDING)]
        return t

    return _fix_count(text, relation, n, lambda t: len(words(t)), _first_words, lengthen)


def _fix_sentences(text: str, *, relation: str, n: int) -> str:
    return _fix_count(
        text,
        relation,
        n,
        lambda t: len(sentences(t)),
        lambda t, k: " ".join(sentences(t)[: max(k, 1)]),
        lambda t, k: _pad_sentences(t, k - len(sentences(t))),
    )


def _chunks(items: list[str], n: int) -> list[list[str]]:
    size, rest = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < rest else 0)
        out.append(items[start:end])
        start = end
    return out


def _units(text: str, n: int) -> list[str]:
    """At least n sentence-like units of the text (padded), for bullets, sections, paragraphs."""
    parts = sentences(text)
    if len(parts) < n:
        parts = sentences(_pad_sentences(text, n - len(parts)))
    return parts


def _fix_bullets(text: str, *, n: int) -> str:
    return "\n".join("* " + " ".join(c) for c in _chunks(_units(text, n), n))


def _fix_paragraphs(text: str, *, n: int) -> str:
    return "\n\n".join(" ".join(c) for c in _chunks(_units(text, n), n))


def _fix_sections(text: str, *, marker: str, n: int) -> str:
    return "\n".join(
        f"{marker} {i + 1}\n" + " ".join(c) for i, c in enumerate(_chunks(_units(text, n), n))
    )


def _fix_keywords(text: str, *, keywords: list[str]) -> str:
    missing = [k for k in keywords if k.lower() not in {w.lower() for w in words(text)}]
    return (
        text if not missing else f"{text.strip()} This answer touches on {' and '.join(missing)}."
    )


def _fix_forbidden(text: str, *, forbidden: list[str]) -> str:
    for word in forbidden:
        text = re.sub(rf"\b{re.escape(word)}\b ?", "", text, flags=re.IGNORECASE)
    return re.sub(r" {2,}", " ", text).strip()


def _fix_frequency(text: str, *, keyword: str, relation: str, n: int) -> str:
    have = sum(w.lower() == keyword.lower() for w in words(text))
    if relation == "at least" and have < n:
        text = text.strip() + "".join(f" The {keyword} matters here." for _ in range(n - have))
    return text


def _fix_capitals(text: str, *, relation: str, n: int) -> str:
    caps = [w for w in words(text) if len(w) > 1 and w.isupper()]
    if relation == "at least" and len(caps) < n:
        need = n - len(caps)

        def up(m: re.Match) -> str:
            nonlocal need
            if need > 0 and len(m.group(0)) > 3 and not m.group(0).isupper():
                need -= 1
                return m.group(0).upper()
            return m.group(0)

        text = WORD.sub(up, text)
        if need > 0:
            text = text.strip() + " " + " ".join(["VERY IMPORTANT NOTE"][:1]) + "."
    elif relation in ("at most", "less than"):
        limit = n if relation == "at most" else n - 1
        seen = 0

        def down(m: re.Match) -> str:
            nonlocal seen
            w = m.group(0)
            if len(w) > 1 and w.isupper():
                seen += 1
                return w if seen <= limit else w.capitalize()
            return w

        text = WORD.sub(down, text)
    return text


def _fix_two(text: str) -> str:
    parts = sentences(text)
    alt = " ".join(reversed(parts)) if len(parts) > 1 else "In other words: " + text.strip()
    return f"{text.strip()}\n{SEPARATOR}\n{alt}"


def _fix_highlights(text: str, *, n: int) -> str:
    parts = _units(text, n)
    return " ".join(f"*{p}*" if i < n else p for i, p in enumerate(parts))


def _fix_max_chars(text: str, *, n: int) -> str:
    text = text.strip()
    if len(text) < n:
        return text
    cut = text[: n - 2].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + "."


FIXERS: dict[str, Callable[..., str] | None] = {
    "word_count": _fix_words,
    "sentence_count": _fix_sentences,
    "paragraph_count": _fix_paragraphs,
    "include_keywords": _fix_keywords,
    "forbidden_words": _fix_forbidden,
    "keyword_frequency": _fix_frequency,
    "letter_frequency": None,
    "lowercase": lambda t: t.lower(),
    "uppercase": lambda t: t.upper(),
    "capital_word_frequency": _fix_capitals,
    "start_with": lambda t, *, phrase: (
        t if start_with(t, phrase=phrase) else f"{phrase} {t.strip()}"
    ),
    "end_with": lambda t, *, phrase: t if end_with(t, phrase=phrase) else f"{t.strip()} {phrase}",
    "quotation": lambda t: t if quotation(t) else f'"{t.strip()}"',
    "json_format": lambda t: (
        t if json_format(t) else json.dumps({"answer": t.strip()}, ensure_ascii=False)
    ),
    "bullet_count": _fix_bullets,
    "section_count": _fix_sections,
    "title": lambda t: (
        t if title(t) else f"<<{' '.join(words(t)[:3]).title() or 'Answer'}>>\n{t.strip()}"
    ),
    "placeholder_count": lambda t, *, n: (
        t.strip() + " " + " ".join(["[name]", "[date]", "[place]", "[time]"][:n])
    ),
    "postscript": lambda t, *, marker: (
        t if postscript(t, marker=marker) else f"{t.strip()}\n\n{marker} Thanks for reading."
    ),
    "no_commas": lambda t: re.sub(r"\s*[,，]\s*", " ", t).strip(),
    "response_language": None,
    "repeat_prompt": lambda t, *, prompt_text: f"{prompt_text.strip()}\n{t.strip()}",
    "two_responses": _fix_two,
    "highlighted_sections": _fix_highlights,
    "max_characters": _fix_max_chars,
}
# Edits that restructure text go first, then content, then framing, then case, then wrapping.
FIX_ORDER = [
    "forbidden_words",
    "no_commas",
    "include_keywords",
    "keyword_frequency",
    "placeholder_count",
    "word_count",
    "sentence_count",
    "max_characters",
    "highlighted_sections",
    "bullet_count",
    "paragraph_count",
    "section_count",
    "two_responses",
    "capital_word_frequency",
    "title",
    "postscript",
    "start_with",
    "end_with",
    "repeat_prompt",
    "lowercase",
    "uppercase",
    "quotation",
    "json_format",
]
FIXABLE = [kind for kind in FIX_ORDER if FIXERS.get(kind) is not None]


def satisfy(
    response: str, constraints: list[dict[str, Any]] | None, *, prompt_text: str = ""
) -> str | None:
    """Edit `response` so it satisfies every constraint; None when the edits cannot (conflict)."""
    todo = sorted(
        constraints or [],
        key=lambda c: FIX_ORDER.index(c["kind"]) if c["kind"] in FIX_ORDER else 99,
    )
    for constraint in todo:
        fixer = FIXERS.get(constraint["kind"])
        if fixer is None:
            return None
        _, params = _params(constraint, prompt_text)
        response = fixer(response, **params)
    return response if all(check_all(constraints, response, prompt_text=prompt_text)) else None
