"""values.Lenient: an event read from its dataclass annotations, as both wires read events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from xswarm.protocol.values import BadMessage, Lenient, nested


@dataclass(frozen=True)
class Levels(Lenient):
    low: int | None = None
    high: int | None = None


@dataclass(frozen=True)
class Example(Lenient):
    TYPE: ClassVar[str] = "example"
    call_id: str
    name: str | None = None
    count: int | None = None
    ratio: float | None = None
    done: bool = False
    request_id: str | int | None = None
    details: Mapping[str, Any] | None = None
    tally: Mapping[str, int] | None = None
    beside: Levels = Levels()
    under: Levels | None = None
    kept: Levels = nested(Levels)


def test_each_field_is_read_by_its_type_and_a_wrong_one_reads_as_absent() -> None:
    data = {
        "call_id": "c1",
        "name": 7,
        "count": True,
        "ratio": float("nan"),
        "done": "yes",
        "request_id": 3.5,
        "details": {"x": float("inf"), "y": [1]},
        "tally": {"a": 2, "b": "3"},
        "low": 1,
        "high": "loud",
        "under": {"low": 4},
        "kept": "not an object",
    }
    assert Example.decode(data) == Example(
        call_id="c1",
        details={"x": None, "y": [1]},
        tally={"a": 2},
        beside=Levels(low=1),
        under=Levels(low=4),
        kept=Levels(),
    )
    assert Example.decode({"call_id": "c2", "kept": {"high": 9}}).kept == Levels(high=9)


def test_a_required_text_field_is_refused_naming_the_message() -> None:
    with pytest.raises(BadMessage, match='example: missing "call_id"'):
        Example.decode({})
    with pytest.raises(BadMessage, match='"call_id" must be a string'):
        Example.decode({"call_id": 1})


def test_an_annotation_without_a_reader_is_a_programming_error() -> None:
    @dataclass(frozen=True)
    class Odd(Lenient):
        values: list[int] | None = None

    with pytest.raises(TypeError, match="no lenient reader"):
        Odd.decode({})
