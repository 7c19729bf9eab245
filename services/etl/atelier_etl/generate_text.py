"""Text for the generated export: word lists and the pools of ready-to-write CSV fields drawn from them.

Every pool entry is already a CSV field (double-quoted, inner quotes doubled), so the generator's hot loop
only indexes a pool. Pool sizes are powers of two so an index is one `getrandbits` call. A few percent of
the summaries and bodies carry the export's format quirks: commas, doubled quotes and line breaks inside
the quoted field, plus the odd non-ASCII character.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

ITEMS = [
    "jacket", "shirt", "hat", "dress", "backpack", "sweater", "scarf", "hoodie", "skirt", "coat", "belt",
    "pair of shoes", "pair of pants", "pair of jeans", "pair of sneakers", "pair of boots", "pair of socks",
    "pair of gloves", "pair of shorts", "pair of sunglasses", "romper", "blazer", "beanie", "cardigan",
]  # fmt: skip
ADJECTIVES = [
    "great", "comfortable", "soft", "sturdy", "stylish", "cozy", "flimsy", "lightweight", "warm", "cheap",
    "gorgeous", "itchy", "durable", "perfect", "decent", "amazing", "disappointing", "breathable", "cute",
    "well made", "overpriced", "sleek", "roomy", "snug", "classy", "funky", "plain", "vibrant",
]  # fmt: skip
COLORS = ["black", "navy", "olive", "red", "cream", "grey", "forest green", "mustard", "white", "tan", "blue"]
PARTS = ["stitching", "zipper", "fabric", "sole", "collar", "hem", "waistband", "lining", "strap", "heel"]
PEOPLE = ["wife", "husband", "son", "daughter", "mom", "dad", "sister", "brother", "friend", "roommate"]
OCCASIONS = ["a wedding", "work", "the gym", "hiking", "a road trip", "the beach", "school", "the winter"]
FITS = ["true to size", "a little small", "a little large", "narrow", "wide", "short", "long"]
SUMMARIES = [
    "This product was {adj}!", "I am liking this {item}", "{Adj} {item}", "Would buy again", "Love it",
    "Not what I expected", "Runs {fit}", "Great value for the price", "{Adj}, but the {part} is {adj}",
    "Perfect for {occasion}", "My {person} loves it", "Returned it", "Five stars", "Meh", "So {adj}",
    "The {color} is even better in person", "Fits {fit}", "Best {item} I own", "Okay, not great",
    "Exactly as described", "Would not recommend", "{Adj} and {adj}", "Bought two, one in {color}",
]  # fmt: skip
QUOTED_SUMMARIES = ['"{Adj}" is an understatement', 'Says "{fit}", it is not', 'A "{adj}" {item}, really']
SENTENCES = [
    "I bought this {item} for my {person} and they love it.",
    "The {part} feels {adj} and the {color} looks exactly like the pictures.",
    "I wore it to {occasion} and got a lot of compliments.",
    "It runs {fit} so consider sizing accordingly.",
    "After a few washes the {part} is still {adj}.",
    "For the price I expected more.",
    "I really did or did not like this product based on whether it was sustainably sourced.",
    "Then I found out that its made from nothing at all.",
    "Shipping was fast and the packaging was {adj}.",
    "I have had it for three months now and it is holding up well.",
    "The {part} started coming apart after two weeks.",
    "My {person} borrowed it for {occasion} and never gave it back.",
    "I would buy it again in {color}.",
    "The material is {adj} but a bit thin for {occasion}.",
    "Customer service helped me exchange it for a size that fits.",
    "I am tiny and do not fit into it.",
    "They are very dark.  But that's good because I'm in very sunny spots.",
    "Five stars from me.",
]
COMMA_SENTENCES = [
    "Honestly, for the price, I expected more.",
    "The {color} one is {adj}, the {color} one less so.",
    "It is {adj}, {adj} and surprisingly {adj}.",
    "Not the best {item} I have owned, but definitely not the worst.",
    "The {part} could be better, otherwise it is {adj}.",
]
QUOTED_SENTENCES = [
    'My {person} called it "{adj}" the first time I wore it.',
    'The label says "{fit}" but that is not my experience.',
    'I would describe the {part} as "{adj}, {adj}".',
]
NON_ASCII_SENTENCES = ["Wore it to a café in Paris, très chic.", "Naïve of me to order one 👍", "Über cozy."]
RESPONSES = [
    "Glad you're enjoying the product!", "Thank you for your feedback.",
    "We're sorry to hear that. Please contact customer service.", "Thanks for the review!",
    "We appreciate your business, and hope to see you again.", 'Thanks! Our "fit guide" may help next time.',
    "Sorry about the {part}, a replacement is on its way.", "We passed your note on to our design team.",
]  # fmt: skip
USER_WORDS = [
    "fun", "time", "main", "stream", "mother", "big", "brother", "benjamin", "happy", "shopper", "blue",
    "sky", "coffee", "lover", "night", "owl", "sunny", "day", "trail", "runner", "city", "girl", "guy",
    "lucky", "star", "quiet", "storm", "bargain", "hunter", "style", "queen", "king", "jackson", "mama",
]  # fmt: skip
FIRST_NAMES = [
    "first", "emma", "liam", "olivia", "noah", "ava", "elijah", "sophia", "lucas", "mia", "mateo", "amelia",
    "james", "harper", "levi", "luna", "ethan", "chloe", "jose", "zoe", "aiden", "nora", "kai", "maya",
]  # fmt: skip
LAST_NAMES = [
    "last", "smith", "johnson", "garcia", "miller", "davis", "rodriguez", "martinez", "lee", "walker",
    "nguyen", "kim", "patel", "brown", "wilson", "lopez", "clark", "young", "hall", "allen", "ward",
]  # fmt: skip
DOMAINS = ["gmail.com", "gmail.com", "gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "icloud.com"]
PHOTO_WIDTHS = [975, 1000, 1050, 668, 1350, 634]

WORDS = {
    "item": ITEMS, "adj": ADJECTIVES, "color": COLORS, "part": PARTS, "person": PEOPLE,
    "occasion": OCCASIONS, "fit": FITS,
}  # fmt: skip

SUMMARY_POOL_BITS = 12
BODY_POOL_BITS = 14
NAME_POOL_BITS = 13
EMAIL_POOL_BITS = 13
PHOTO_POOL_BITS = 12
BODY_MIN, BODY_MAX = 50, 1000
SUMMARY_MAX = 60


def quote(text: str) -> str:
    """The CSV field of `text`: always double-quoted, inner quotes doubled."""
    return '"' + text.replace('"', '""') + '"'


class _Filler(dict[str, str]):
    """Fills `{adj}` with a random adjective and `{Adj}` with a capitalised one."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng

    def __missing__(self, key: str) -> str:
        word = self.rng.choice(WORDS[key.lower()])
        return word.capitalize() if key[0].isupper() else word


def fill(rng: random.Random, template: str) -> str:
    return template.format_map(_Filler(rng))


def summary(rng: random.Random) -> str:
    templates = QUOTED_SUMMARIES if rng.random() < 0.03 else SUMMARIES
    return fill(rng, rng.choice(templates))[:SUMMARY_MAX]


def body(rng: random.Random) -> str:
    # Lengths are skewed: most reviews are a few sentences, a few run to the 1,000-character limit.
    target = max(BODY_MIN, min(BODY_MAX, int(rng.lognormvariate(4.7, 0.6))))
    separator = rng.choice(["\n", "\n\n"]) if rng.random() < 0.03 else rng.choice([" ", " ", "  "])
    text = ""
    while len(text) < target:
        pick = rng.random()
        if pick < 0.01:
            sentence = rng.choice(NON_ASCII_SENTENCES)
        elif pick < 0.025:
            sentence = fill(rng, rng.choice(QUOTED_SENTENCES))
        elif pick < 0.06:
            sentence = fill(rng, rng.choice(COMMA_SENTENCES))
        else:
            sentence = fill(rng, rng.choice(SENTENCES))
        longer = f"{text}{separator}{sentence}" if text else sentence
        if len(longer) > BODY_MAX and len(text) >= BODY_MIN:
            break
        text = longer
    return text[:BODY_MAX]


def reviewer_name(rng: random.Random) -> str:
    name = "".join(rng.sample(USER_WORDS, rng.choice([1, 2, 2, 3])))
    return name + str(rng.randrange(100)) if rng.random() < 0.3 else name


def reviewer_email(rng: random.Random) -> str:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    shape = rng.randrange(4)
    if shape == 0:
        local = f"{first}.{last}"
    elif shape == 1:
        local = f"{first}{last}{rng.randrange(1, 100)}"
    elif shape == 2:
        local = f"{first[0]}{last}"
    else:
        local = f"{first}_{last}{rng.randrange(1970, 2005)}"
    return f"{local}@{rng.choice(DOMAINS)}"


def photo_url(rng: random.Random) -> str:
    photo = f"{rng.randrange(1_480_000_000_000, 1_610_000_000_000)}-{rng.getrandbits(48):012x}"
    return (
        f"https://images.unsplash.com/photo-{photo}?ixlib=rb-1.2.1&ixid=eyJhcHBfaWQiOjEyMDd9"
        f"&auto=format&fit=crop&w={rng.choice(PHOTO_WIDTHS)}&q=80"
    )


@dataclass(frozen=True)
class TextPools:
    """Quoted CSV fields to draw from; pool `x` has 2**X_POOL_BITS entries."""

    summaries: list[str]
    bodies: list[str]
    names: list[str]
    emails: list[str]
    photo_urls: list[str]
    responses: list[str]


def build_pools(seed: int) -> TextPools:
    rng = random.Random(f"atelier-text:{seed}")
    # About 1 in 5 emails is the export's placeholder address, as in the public sample rows.
    emails = [
        quote("first.last@gmail.com" if rng.random() < 0.2 else reviewer_email(rng))
        for _ in range(1 << EMAIL_POOL_BITS)
    ]
    return TextPools(
        summaries=[quote(summary(rng)) for _ in range(1 << SUMMARY_POOL_BITS)],
        bodies=[quote(body(rng)) for _ in range(1 << BODY_POOL_BITS)],
        names=[quote(reviewer_name(rng)) for _ in range(1 << NAME_POOL_BITS)],
        emails=emails,
        photo_urls=[quote(photo_url(rng)) for _ in range(1 << PHOTO_POOL_BITS)],
        responses=[quote(fill(rng, response)) for response in RESPONSES],
    )
