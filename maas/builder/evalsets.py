"""Evaluation sets for parity: varied, deterministic, and never the tests' own held-out data.

The text set covers what breaks quantized encoders in practice: very short inputs,
inputs longer than the model's maximum (truncated), punctuation, numbers, code,
non-English scripts and emoji.
"""

from __future__ import annotations

import random

_SHORT = [
    "Hi", "ok", "Thanks!", "no", "What?", "yes please", "404", "¿Qué?", "????", "a",
]
_SENTENCES = [
    "The quarterly report shows revenue grew 12% while costs stayed flat.",
    "Please reset my password; the link in the email has expired.",
    "A neural network learns a function from examples rather than rules.",
    "The river flooded the lower village after three days of heavy rain.",
    "She plays the cello in a string quartet every Thursday evening.",
    "Our flight was delayed by two hours because of fog at the airport.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The museum's new wing opens to the public on the first of May.",
    "He forgot his umbrella on the train, again.",
    "Interest rates are expected to fall slightly next year.",
    "How do I configure a reverse proxy in front of my web server?",
    "The recipe calls for 250 g of flour, 2 eggs and 300 ml of milk.",
    "Customer says the blender makes a grinding noise at high speed.",
    "Mount Everest is 8,849 metres tall according to the 2020 survey.",
    "I would like to cancel my subscription and get a refund.",
    "The defendant pleaded not guilty to all charges on Monday.",
    "Vaccines train the immune system to recognise a pathogen.",
    "Our team shipped the release candidate late on Friday night.",
    "The cat knocked the glass off the table and looked proud of it.",
    "Solar panels on the warehouse roof now cover half its power use.",
]
_PUNCTUATION = [
    "Wait... what?! No way!!!",
    "\"Quoted text,\" she said; (parenthetical) [bracketed] {braced}.",
    "--- *** ### @@@ !!! ???",
    "e-mail: someone@example.com, url: https://example.org/a?b=c&d=e#f",
    "It's 5 o'clock -- time's up; isn't it?",
]
_NUMBERS = [
    "3.14159 2.71828 1.41421 1.73205",
    "Order #48213 shipped on 2024-03-17 at 14:05 UTC, total $1,299.99.",
    "Call +1 (555) 010-9999 or +44 20 7946 0958.",
    "The vector was [0.12, -3.4e-5, 7, 1e10].",
    "Between 1914 and 1918 about 16 million people died.",
]
_CODE = [
    "def add(a, b):\n    return a + b",
    "for (int i = 0; i < n; ++i) { sum += v[i]; }",
    "SELECT name, COUNT(*) FROM users GROUP BY name HAVING COUNT(*) > 1;",
    "kubectl get pods -n kube-system -o wide | grep Running",
    "<div class=\"card\"><span>{{ title }}</span></div>",
    "const f = async (x) => await fetch(`/api/${x}`).then(r => r.json());",
]
_NON_ENGLISH = [
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le chat dort sur le canapé depuis ce matin.",
    "El tren de Madrid a Sevilla tarda dos horas y media.",
    "Il museo è chiuso il lunedì e nei giorni festivi.",
    "Москва — столица России и крупнейший город страны.",
    "東京は日本の首都であり、世界最大の都市圏の一つです。",
    "我今天早上喝了一杯咖啡，然后去上班。",
    "서울은 대한민국의 수도입니다.",
    "القاهرة هي عاصمة مصر وأكبر مدنها.",
    "नमस्ते, आप कैसे हैं?",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "Saya suka makan nasi goreng di pagi hari.",
]
_EMOJI = [
    "Great job team 🎉🎉🎉",
    "I ❤️ pizza 🍕 and tacos 🌮",
    "🙂",
    "Launch in 3… 2… 1… 🚀",
    "The weather today: ☀️ then 🌧️ then ⛈️",
]


TEXT_SET_DESCRIPTION = (
    "{count} varied texts (maas.builder.evalsets): short, longer than the maximum and truncated, "
    "punctuation, numbers, code, 12 languages, emoji"
)


def embedding_texts(count: int = 240, seed: int = 7) -> list[str]:
    """At least `count` varied texts; about one in eight is longer than 256 tokens."""
    rng = random.Random(seed)
    pools = [_SHORT, _SENTENCES, _PUNCTUATION, _NUMBERS, _CODE, _NON_ENGLISH, _EMOJI]
    texts: list[str] = [t for pool in pools for t in pool]
    while len(texts) < count:
        kind = rng.randrange(10)
        if kind < 3:  # two or three sentences from different pools
            parts = [rng.choice(rng.choice(pools)) for _ in range(rng.randint(2, 3))]
            texts.append(" ".join(parts))
        elif kind < 5:  # long enough to be truncated at 256 tokens
            parts = [rng.choice(_SENTENCES + _NON_ENGLISH + _CODE) for _ in range(rng.randint(20, 40))]
            texts.append(" ".join(parts))
        elif kind < 6:
            texts.append(rng.choice(_SENTENCES).upper())
        elif kind < 7:
            words = rng.choice(_SENTENCES).split()
            rng.shuffle(words)
            texts.append(" ".join(words))
        else:
            sentence = rng.choice(_SENTENCES)
            texts.append(sentence.replace(".", f" {rng.choice(_EMOJI + _NUMBERS)}."))
    return texts[:count]


CALIBRATION_SEED = 1009
CALIBRATION_DESCRIPTION = (
    "{count} texts composed by maas.builder.evalsets with seed {seed} (another draw than the parity "
    "set's, none of them one of its texts; the fixed pools' single items are left out)"
)


def calibration_texts(count: int = 48) -> list[str]:
    """Texts that calibrate quantization (activation ranges, node sensitivity): drawn like the parity
    set but never one of its texts, so parity measures what calibration did not see."""
    fixed = {t for pool in (_SHORT, _SENTENCES, _PUNCTUATION, _NUMBERS, _CODE, _NON_ENGLISH, _EMOJI) for t in pool}
    held_out = set(embedding_texts()) | fixed
    drawn = embedding_texts(count=len(fixed) + 4 * count, seed=CALIBRATION_SEED)
    return [t for t in drawn if t not in held_out][:count]
