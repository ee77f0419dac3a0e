"""Named vocabularies that template domains sample from, e.g. `sample(names_female)`.

All lists are of this project's own writing. Entries that need both a surface form and a value
are `(display, value)` tuples: the question shows the display, expressions use `value[1]`.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

NAMES_FEMALE = [
    "Amara", "Beatriz", "Chloe", "Dalia", "Elena", "Fatima", "Grace", "Hana", "Ingrid", "Jasmine",
    "Keiko", "Leila", "Maya", "Nadia", "Olivia", "Priya", "Quinn", "Rosa", "Sofia", "Tamar",
    "Uma", "Valentina", "Wren", "Ximena", "Yara", "Zoe", "Aisha", "Bianca", "Carmen", "Daniela",
]
NAMES_MALE = [
    "Aarav", "Bruno", "Carlos", "Dmitri", "Ethan", "Felix", "Gabriel", "Hiro", "Ivan", "Jamal",
    "Kofi", "Liam", "Mateo", "Nikhil", "Omar", "Pablo", "Rafael", "Samuel", "Tomas", "Umar",
    "Victor", "Wei", "Xavier", "Yusuf", "Zane", "Arjun", "Benedict", "Caleb", "Diego", "Elias",
]
NAMES = sorted(NAMES_FEMALE + NAMES_MALE)

VOCABULARIES: dict[str, list[Any]] = {
    "names": NAMES,
    "names_male": NAMES_MALE,
    "names_female": NAMES_FEMALE,
    "fruits": [
        "apples", "bananas", "cherries", "grapes", "kiwis", "lemons", "mangoes", "oranges",
        "peaches", "pears", "plums", "apricots", "figs", "limes", "strawberries",
    ],
    "vegetables": [
        "carrots", "potatoes", "onions", "tomatoes", "cucumbers", "peppers", "zucchinis",
        "beets", "radishes", "turnips", "eggplants", "leeks",
    ],
    "colors": [
        "red", "blue", "green", "yellow", "purple", "orange", "pink", "white", "black", "brown",
        "gray", "teal",
    ],
    "cities": [
        "Lisbon", "Nairobi", "Osaka", "Toronto", "Lima", "Oslo", "Cairo", "Hanoi", "Denver",
        "Melbourne", "Krakow", "Bogota", "Dublin", "Seoul", "Accra",
    ],
    "weekdays": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "months": [
        "January", "February", "March", "April", "May", "June", "July", "August", "September",
        "October", "November", "December",
    ],
    "currencies_sym": ["$", "€", "£", "¥", "₹", "₩"],
    "animals": [
        "rabbits", "goats", "chickens", "ducks", "sheep", "pigs", "horses", "cows", "geese",
        "llamas", "turkeys", "donkeys",
    ],
    "pets": ["dog", "cat", "hamster", "parrot", "turtle", "goldfish", "rabbit", "ferret", "lizard"],
    "baked_goods": [
        "muffins", "cookies", "cupcakes", "croissants", "bagels", "brownies", "scones", "pretzels",
        "donuts", "rolls",
    ],
    "sports": ["soccer", "tennis", "basketball", "volleyball", "hockey", "cricket", "rugby", "badminton"],
    "stores": [
        "bakery", "bookshop", "grocery store", "hardware store", "toy store", "flower shop",
        "pharmacy", "market stall",
    ],
    "family": ["sister", "brother", "cousin", "aunt", "uncle", "grandmother", "grandfather", "neighbor"],
    "multi_times": [
        ("twice", 2), ("three times", 3), ("four times", 4), ("five times", 5), ("six times", 6),
        ("seven times", 7), ("eight times", 8), ("ten times", 10),
    ],
    "fractions": [
        ("half", Fraction(1, 2)), ("a third", Fraction(1, 3)), ("a quarter", Fraction(1, 4)),
        ("a fifth", Fraction(1, 5)), ("two thirds", Fraction(2, 3)),
        ("three quarters", Fraction(3, 4)), ("two fifths", Fraction(2, 5)),
        ("a tenth", Fraction(1, 10)),
    ],
}


def vocabulary_names() -> list[str]:
    return sorted(VOCABULARIES)
