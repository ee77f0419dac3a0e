"""Named vocabularies that template domains sample from, e.g. `sample(names_female)`.

All lists are of this project's own writing. Apple published the names the official templates
use, not the lists; what each holds and how it reads was inferred from the templates and from the
questions of Apple's released generated sets (see docs/GSM_SYMBOLIC.md).

Entries that need both a surface form and a value are `(display, value)` tuples. A `$` variable
drawn from them takes the value (its display goes into the question); a plain variable keeps the
tuple, so expressions read `value[1]`.
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

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
# Denominator words as Apple's sets read them: "one-fourth", "two-fifths" (never "quarter" here).
ORDINAL_WORDS = {2: "half", 3: "third", 4: "fourth", 5: "fifth", 6: "sixth", 7: "seventh", 8: "eighth",
                 9: "ninth", 10: "tenth"}


def _proper_fractions() -> list[tuple[int, int]]:
    """Every n/d with 2 <= d <= 10 and 0 < n < d, unreduced (2/4 and 1/2 are both there), ordered
    by denominator then numerator, so `[:4]` is 1/2, 1/3, 2/3, 1/4."""
    return [(numerator, denominator) for denominator in range(2, 11) for numerator in range(1, denominator)]


def _fraction_digits() -> list[tuple[str, Fraction]]:
    return [(f"{n}/{d}", Fraction(n, d)) for n, d in _proper_fractions()]


def _fraction_words() -> list[tuple[str, Fraction]]:
    words = []
    for n, d in _proper_fractions():
        ordinal = ORDINAL_WORDS[d] if n == 1 else ("halves" if d == 2 else ORDINAL_WORDS[d] + "s")
        words.append((f"{NUMBER_WORDS[n]}-{ordinal}", Fraction(n, d)))
    return words


UNIT_FRACTIONS = [
    ("half", Fraction(1, 2)), ("a third", Fraction(1, 3)), ("a quarter", Fraction(1, 4)),
    ("a fifth", Fraction(1, 5)), ("an eighth", Fraction(1, 8)), ("a tenth", Fraction(1, 10)),
] + [(f"1/{d}", Fraction(1, d)) for d in range(2, 11)]

VOCABULARIES: dict[str, list[Any]] = {
    "names": NAMES,
    "names_male": NAMES_MALE,
    "names_female": NAMES_FEMALE,
    # Singular: templates write "{fruit}s" and "{fruit} pie".
    "fruits": [
        "apple", "banana", "cherry", "grape", "kiwi", "lemon", "mango", "orange", "peach", "pear",
        "plum", "apricot", "fig", "lime", "melon", "papaya", "guava", "pineapple", "pomegranate",
        "watermelon",
    ],
    "vegetables": [
        "carrots", "potatoes", "onions", "tomatoes", "cucumbers", "peppers", "zucchinis",
        "beets", "radishes", "turnips", "eggplants", "leeks",
    ],
    "colors": [
        "red", "blue", "green", "yellow", "purple", "orange", "pink", "white", "black", "brown",
        "gray", "teal", "violet", "maroon", "silver", "gold", "cyan", "indigo", "magenta", "turquoise",
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
    "currencies_sym": ["$", "€", "£", "¥", "₹", "₺", "₩", "₣"],
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
    # Units as singular nouns: templates write "{w,12}-{unit} bags" and "{total} {unit}s".
    "weights_sm": ["ounce", "gram"],
    "weights_med": ["pound", "kg"],
    "length_lg": ["mile", "kilometer"],
    # Multipliers: "{mult} as many" reads "three times as many"; the value is the factor.
    "multi_times": [(f"{NUMBER_WORDS[k]} times", k) for k in range(2, 11)],
    "multiple_ice": [("twice", 2), ("thrice", 3)],
    "multiple": [("double", 2), ("triple", 3), ("quadruple", 4), ("quintuple", 5)],
    # Fractions: the value is an exact Fraction; the text is digits, words, or either.
    "fractions": UNIT_FRACTIONS,
    "fraction_nums": _fraction_digits(),
    "fraction_alph": _fraction_words(),
    "fraction_alnum": _fraction_digits() + _fraction_words(),
    "fraction_decimals": [round(tenths / 10, 1) for tenths in range(1, 10)],
}


def vocabulary_names() -> list[str]:
    return sorted(VOCABULARIES)
