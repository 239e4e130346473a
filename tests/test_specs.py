"""Parsers of the small textual specs: every bad token is named, nothing silently becomes []."""

from __future__ import annotations

import pytest

from latentdirs.errors import SpecError
from latentdirs.specs import parse_alphas, parse_index_spec, parse_option, parse_strength_range, split_generator_spec


@pytest.mark.parametrize("text, expected", [
    ("0-3,7", [0, 1, 2, 3, 7]),
    ("5", [5]),
    (" 2 - 4 , 1 ", [2, 3, 4, 1]),
    ("1,1,0-1", [1, 0]),
])
def test_index_spec_parses(text, expected):
    assert parse_index_spec(text) == expected


@pytest.mark.parametrize("text, fragment", [
    ("7-0", "'7-0' descends; write '0-7'"),
    ("1,,2", "empty item"),
    ("-1", "'-1' is negative"),
    ("a", "'a' is not an integer"),
    ("", "allowed"),
    ("1-x", "'1-x' is not an integer"),
])
def test_index_spec_refuses(text, fragment):
    with pytest.raises(SpecError, match="seeds: got") as caught:
        parse_index_spec(text, param="seeds")
    assert fragment in str(caught.value)


def test_index_spec_upper_bound_named():
    with pytest.raises(SpecError, match="12 is out of range") as caught:
        parse_index_spec("0,12", param="--indices", upper=10)
    assert "indices 0-9" in str(caught.value)


@pytest.mark.parametrize("text, expected", [
    ("-3:3:7", [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]),
    ("2:2:1", [2.0]),
    ("-1.5,0,2", [-1.5, 0.0, 2.0]),
    ("3:-3:3", [3.0, 0.0, -3.0]),
])
def test_alphas_parse(text, expected):
    assert parse_alphas(text) == pytest.approx(expected)


@pytest.mark.parametrize("text, fragment", [
    ("3:-3:x", "NUM 'x' is not an integer"),
    ("1:2", "exactly three parts"),
    ("0:1:0", "NUM must be at least 1"),
    ("a:1:3", "START and STOP must be numbers"),
    ("1,,2", "allowed"),
    ("nan", "finite"),
])
def test_alphas_refuse(text, fragment):
    with pytest.raises(SpecError, match="alphas: got") as caught:
        parse_alphas(text)
    assert fragment in str(caught.value)


@pytest.mark.parametrize("text, expected", [("3", (1.5, 3.0)), ("1:3", (1.0, 3.0)), ("2:2", (2.0, 2.0)),
                                            (4.0, (2.0, 4.0)), ((0.5, 1.0), (0.5, 1.0))])
def test_strength_range_parses(text, expected):
    assert parse_strength_range(text) == expected


@pytest.mark.parametrize("text, fragment", [
    ("3:1", "positive and in order"), ("0", "positive and in order"), ("-1:2", "positive and in order"),
    ("1:2:3", "more than two parts"), ("x", "HIGH or LOW:HIGH"), ("inf", "finite"),
])
def test_strength_range_refuses(text, fragment):
    with pytest.raises(SpecError, match="strength: got") as caught:
        parse_strength_range(text)
    assert fragment in str(caught.value)


def test_generator_spec_split():
    assert split_generator_spec("biggan:biggan-deep-256") == ("biggan", "biggan-deep-256")
    assert split_generator_spec("module:a.b:make") == ("module", "a.b:make")
    assert split_generator_spec("synthetic") == ("synthetic", None)
    with pytest.raises(SpecError, match="non-empty argument"):
        split_generator_spec("biggan:")


def test_option_values_read_as_json():
    assert parse_option("steps=500") == ("steps", 500)
    assert parse_option("lr=1e-3") == ("lr", 0.001)
    assert parse_option("warm-start=sefa") == ("warm_start", "sefa")
    assert parse_option("taps=[\"main.3\"]") == ("taps", ["main.3"])
    with pytest.raises(SpecError, match="KEY=VALUE"):
        parse_option("steps")


def test_messages_echo_long_values_bounded_and_floats_as_written():
    with pytest.raises(SpecError) as caught:
        parse_index_spec(list(range(50_000)), param="layers", upper=10)
    message = str(caught.value)
    assert message.startswith("layers: got [0, 1, 2, ") and "… (50000 items)]; allowed: indices 0-9" in message
    assert len(message) < 300
    with pytest.raises(SpecError, match=r"^strength: got \(0\.2, 0\.1\); allowed"):
        parse_strength_range((0.2, 0.1))
