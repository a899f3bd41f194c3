"""Property-based tests of the runtime library's input checks, on the real demo models.

Whatever a request holds (any Unicode, unpaired surrogates and control characters included, any
nesting of JSON values, numbers far beyond float64), `Model.predict` either answers one output
per input or refuses with InvalidInput / LimitExceeded and a short message. Anything else (a
tokenizer or numpy error, an overflow) would be a 500 in the API, and fails here.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from maas_runtime import InvalidInput, LimitExceeded, load_model  # noqa: E402

BUILD = Path(__file__).resolve().parents[2] / "build"
MAX_MESSAGE = 300
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _model(name: str):
    folder = BUILD / name / "1.0.0"
    if not (folder / "card.json").is_file():
        pytest.skip(f"build/ lacks {name}: run `maas build` first")
    return load_model(folder)


@pytest.fixture(scope="module")
def minilm():
    return _model("minilm")


@pytest.fixture(scope="module")
def digits():
    return _model("digits")


# Any Unicode: Hypothesis' text leaves out surrogates, so they are drawn explicitly too.
any_text = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=st.characters(codec=None, categories=["Cs", "Cc", "Cf", "Zs", "Co", "Cn", "So"]), max_size=50),
    st.sampled_from(["\ud800", "a\udfffb", "\x00", "\u200b" * 40, "\U0010ffff", "👩🏽‍🚀" * 30, "\r\n\t", "x" * 100_001]),
)
extreme_numbers = st.one_of(
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -0.0, 16, 16.000000001, 5e-324, 1.7976931348623157e308, 10**4000]),
)
json_leaf = st.one_of(st.none(), st.booleans(), extreme_numbers, any_text)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=40,
)
parameters = st.one_of(
    st.dictionaries(st.sampled_from(["normalize", "truncate", "top_k"]), json_value, max_size=3),
    st.dictionaries(any_text, json_value, max_size=3),
)


def check(model, inputs, params) -> None:
    """The property: an answer per input, or a refusal of the runtime's own kinds with a short message."""
    try:
        prediction = model.predict(inputs, params)
    except (InvalidInput, LimitExceeded) as exc:
        assert 0 < len(exc.message) <= MAX_MESSAGE, exc.message
        return
    assert len(prediction.outputs) == len(inputs)


@SETTINGS
@given(inputs=st.lists(any_text, min_size=1, max_size=6), params=parameters)
def test_text_model_answers_or_refuses_any_text(minilm, inputs, params):
    check(minilm, inputs, params)


@SETTINGS
@given(inputs=st.lists(json_value, min_size=1, max_size=4), params=parameters)
def test_text_model_answers_or_refuses_any_json(minilm, inputs, params):
    check(minilm, inputs, params)


pixel = st.one_of(st.integers(min_value=0, max_value=16), st.floats(min_value=0, max_value=16), extreme_numbers, json_leaf)
image = st.one_of(
    st.lists(st.lists(pixel, min_size=7, max_size=9), min_size=7, max_size=9),
    st.lists(pixel, min_size=63, max_size=65),
    json_value,
)


@SETTINGS
@given(inputs=st.lists(image, min_size=1, max_size=4), params=parameters)
def test_image_model_answers_or_refuses_any_nesting_and_number(digits, inputs, params):
    check(digits, inputs, params)


def test_image_model_takes_exactly_8x8_or_64_flat(digits):
    # GIVEN 64 valid pixel values, shaped every way
    flat = [float(i % 17) for i in range(64)]
    rows = [flat[r * 8:(r + 1) * 8] for r in range(8)]
    # THEN only 8 rows of 8 and 64 flat are read, with the same answer
    assert digits.predict([rows]).outputs == digits.predict([flat]).outputs
    for shaped in ([flat[:32], flat[32:]], [rows[:4], rows[4:]], [*rows[:7], *rows[7]], [[v] for v in flat],
                   [*flat[:56], rows[7]]):
        with pytest.raises(InvalidInput, match=r"inputs\[0\]"):
            digits.predict([shaped])


@pytest.mark.parametrize("value", [10**400, -(10**400), float("inf"), float("nan"), True, "3", None, [1]])
def test_a_pixel_no_float_can_hold_or_no_number_at_all_is_refused_by_position(digits, value):
    image = [[0] * 8 for _ in range(8)]
    image[3][5] = value
    with pytest.raises(InvalidInput, match=r"inputs\[0\]: pixel 29 "):
        digits.predict([image])


def test_unpaired_surrogates_are_refused_naming_the_input(minilm):
    with pytest.raises(InvalidInput, match=r"inputs\[2\] is not valid Unicode text.*character 4"):
        minilm.predict(["fine", "also fine", "oops\udc80"])
    # a surrogate pair is one character: valid
    assert len(minilm.predict(["\U0001f600 ok"]).outputs) == 1


def test_text_limits_hold_before_tokenizing(minilm):
    from maas_runtime.tasks.base import MAX_BATCH_CHARS, MAX_TEXT_CHARS

    with pytest.raises(LimitExceeded, match=r"inputs\[0\] has"):
        minilm.predict(["x" * (MAX_TEXT_CHARS + 1)])
    per = MAX_TEXT_CHARS
    with pytest.raises(LimitExceeded, match="together"):
        minilm.predict(["x" * per] * (math.ceil(MAX_BATCH_CHARS / per) + 1))


def test_error_messages_quote_client_keys_short(minilm):
    with pytest.raises(InvalidInput) as caught:
        minilm.predict(["x"], {"k" * 100_000: 1, "\ud800": 2})
    assert len(caught.value.message) < MAX_MESSAGE and "\\ud800" in caught.value.message
