"""The `noop` variant: one seemingly relevant but inconsequential clause, inserted before the
question sentence; the answer does not change.

The clause bank is of this project's own writing. A pattern may use slots filled from the
instance itself (`{person}`: a name the question uses, `{things}`: a plural noun it uses) or from
the named vocabularies (`{color}`, `{family}`, `{store}`, `{pet}`, `{city}`, `{weekday}`) and small
number words (`{few}`). Patterns whose instance slots cannot be filled are skipped.
"""

from __future__ import annotations

import random
import re
from typing import Any

from plugins.gsm_symbolic.vocabularies import VOCABULARIES

NOOP_CLAUSES: tuple[str, ...] = (
    # about the things the question counts
    "{few} of the {things} were slightly smaller than the others.",
    "{few} of the {things} looked a little paler than the rest, but they were perfectly fine.",
    "The {things} were kept in a {color} crate near the door.",
    "A few of the {things} had small paper labels tied to them.",
    "Some of the {things} had been bought the week before at a discount.",
    "The {things} were arranged in neat rows, which took about {few} minutes.",
    # about the person in the question
    "{person} wrote everything down in a small {color} notebook.",
    "{person} had done something very similar the year before.",
    "{person} hummed a tune the whole time.",
    "{person}'s {family} stopped by to watch for a while.",
    "Earlier that day, {person} had read an article about a {pet} that could count to {few}.",
    "{person} was wearing a {color} jacket that was {few} sizes too big.",
    # neither
    "The weather that day was unusually warm for the season.",
    "A radio in the corner was playing old songs the whole time.",
    "Prices at the {store} next door had gone up by {few} percent last month.",
    "The {color} sign at the entrance had been repainted on {weekday}.",
    "A similar story had made the local news in {city} the year before.",
    "{few} neighbors asked about it, but none of them took part.",
    "The previous {weekday} had been a public holiday.",
    "Someone's {pet} wandered in and out {few} times during all of this.",
    "Nobody had written down the exact time it all started.",
    "A delivery van parked outside for {few} minutes and then drove off empty.",
)

FEW = ("two", "three", "four", "five", "six", "seven")
PLURAL_VOCABULARIES = ("vegetables", "animals", "baked_goods")
SLOT_PATTERN = re.compile(r"\{(\w+)\}")
# A sentence ends at . ! or ? followed by space and a capital letter (so 2.5 or $3.50 never split).
SENTENCE_END = re.compile(r"(?<=[.!?])[\"”']?\s+(?=[A-Z\"“])")


def _instance_slots(values: dict[str, Any]) -> dict[str, str]:
    """`person` and `things` from the instance's own values, when it has such variables."""
    names = set(VOCABULARIES["names"])
    plurals = {item for vocabulary in PLURAL_VOCABULARIES for item in VOCABULARIES[vocabulary]}
    slots: dict[str, str] = {}
    for value in values.values():
        if isinstance(value, str):
            if value in names:
                slots.setdefault("person", value)
            elif value in plurals:
                slots.setdefault("things", value)
    return slots


def usable_clauses(values: dict[str, Any]) -> list[str]:
    """The patterns of the bank this instance can fill (those about a person need a name in it...)."""
    slots = _instance_slots(values)
    return [pattern for pattern in NOOP_CLAUSES
            if all(slot in slots or slot not in ("person", "things") for slot in SLOT_PATTERN.findall(pattern))]


def clause_fit(values: dict[str, Any]) -> float:
    """The share of the bank's clauses that fit this instance (1.0: every clause could be used)."""
    return len(usable_clauses(values)) / len(NOOP_CLAUSES)


def noop_clause(values: dict[str, Any], rng: random.Random) -> str:
    """One clause of the bank, its slots filled; only patterns the instance can fill are drawn."""
    slots = _instance_slots(values)
    usable = usable_clauses(values)
    pattern = rng.choice(usable)
    fill = {
        **slots,
        "few": rng.choice(FEW),
        "color": rng.choice(VOCABULARIES["colors"]),
        "family": rng.choice(VOCABULARIES["family"]),
        "store": rng.choice(VOCABULARIES["stores"]),
        "pet": rng.choice(VOCABULARIES["pets"]),
        "city": rng.choice(VOCABULARIES["cities"]),
        "weekday": rng.choice(VOCABULARIES["weekdays"]),
    }
    clause = pattern.format(**fill)
    return clause[:1].upper() + clause[1:]


def insert_before_question(question: str, clause: str) -> str:
    """`clause` placed right before the last sentence (the question); first if there is only one."""
    question = question.strip()
    ends = list(SENTENCE_END.finditer(question))
    if not ends:
        return f"{clause} {question}"
    cut = ends[-1]
    return f"{question[:cut.start()]}{question[cut.start():cut.end()].rstrip()} {clause} {question[cut.end():]}"
