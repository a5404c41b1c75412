"""values.Lenient and values.Encodable: a record read from, and written as, its dataclass
fields, as both wires read and write their messages."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.strategies import typed
from xswarm.protocol import control, operator
from xswarm.protocol.values import BadMessage, Encodable, Lenient, nested, omit_default


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


# ---------------------------------------------------------------------------------------
# Encodable: the mirror of Lenient
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Written(Lenient):
    TYPE: ClassVar[str] = "written"
    call_id: str
    name: str | None = None
    extra: str | None = omit_default()
    details: Mapping[str, Any] | None = None
    beside: Levels = Levels()
    under: Levels | None = None
    kept: Levels = nested(Levels)
    done: bool = omit_default(False)
    last: int | None = None


def test_fields_are_written_in_declared_order_with_type_first_and_none_as_null() -> None:
    assert Written("c1").encode() == {
        "type": "written",
        "call_id": "c1",
        "name": None,
        "details": None,
        "low": None,
        "high": None,
        "under": None,
        "kept": {"low": None, "high": None},
        "last": None,
    }
    assert list(Written("c1").encode()) == [
        "type",
        "call_id",
        "name",
        "details",
        "low",
        "high",
        "under",
        "kept",
        "last",
    ]


def test_an_omitted_field_is_written_in_its_place_once_it_differs_from_its_default() -> None:
    encoded = Written("c1", extra="x", done=True, under=Levels(high=2)).encode()
    assert list(encoded) == [
        "type",
        "call_id",
        "name",
        "extra",
        "details",
        "low",
        "high",
        "under",
        "kept",
        "done",
        "last",
    ]
    assert encoded["extra"] == "x" and encoded["done"] is True
    assert encoded["under"] == {"low": None, "high": 2}


def test_body_is_the_message_without_its_type_and_mappings_are_copies() -> None:
    details = {"device": "cuda"}
    record = Written("c1", details=details)
    body = record.body()
    assert body == {k: v for k, v in record.encode().items() if k != "type"}
    assert body["details"] == details and body["details"] is not details


def test_what_is_written_reads_back_the_same() -> None:
    record = Written("c1", "n", "x", {"a": [1]}, Levels(1, 2), Levels(3), Levels(high=4), True, 5)
    assert Written.decode(json.loads(json.dumps(record.encode()))) == record
    assert Written.decode(json.loads(json.dumps(Written("c2").encode()))) == Written("c2")


def test_tuples_are_written_as_lists_and_records_in_them_as_objects() -> None:
    @dataclass(frozen=True)
    class Listing(Encodable):
        names: tuple[str, ...] = ()
        levels: tuple[Levels, ...] | None = None

    assert Listing(("a",), (Levels(1),)).encode() == {
        "names": ["a"],
        "levels": [{"low": 1, "high": None}],
    }
    assert Listing().encode() == {"names": [], "levels": None}


def test_a_hand_written_body_is_what_encode_sends_after_the_type() -> None:
    @dataclass(frozen=True)
    class Reordered(Encodable):
        TYPE: ClassVar[str] = "reordered"
        first: str
        second: str

        def body(self) -> dict[str, Any]:
            return {"second": self.second, "first": self.first}

    assert list(Reordered("1", "2").encode().items()) == [
        ("type", "reordered"),
        ("second", "2"),
        ("first", "1"),
    ]


def test_a_subclass_writes_its_own_fields_not_its_compiled_base_class_ones() -> None:
    @dataclass
    class Base(Encodable):
        a: int | None = None

    @dataclass
    class Wider(Base):
        b: int | None = None

    bound = Base(1).encode  # bound before the first encode compiled the class
    assert bound() == {"a": 1} and bound() == {"a": 1}
    assert Wider(1, 2).encode() == {"a": 1, "b": 2}

    @dataclass
    class Later(Base):
        c: int | None = None

    assert Later(1, 3).body() == {"a": 1, "c": 3}
    assert Base(3).encode() == {"a": 3}


def test_rules_that_cannot_hold_are_programming_errors() -> None:
    @dataclass(frozen=True)
    class OddDefault(Encodable):
        count: int = omit_default(0)  # type: ignore[arg-type]

    with pytest.raises(TypeError, match="omit_default"):
        OddDefault().encode()

    @dataclass(frozen=True)
    class OmittedBeside(Encodable):
        levels: Levels = omit_default()

    with pytest.raises(TypeError, match="never left out"):
        OmittedBeside().encode()


# Every wire record of both wires, with how it is read back; WRITTEN_ONLY are never read by
# a decoder of ours (the TUI reads them as plain objects).
NONEMPTY = {str: st.text(min_size=1, max_size=24)}
CONTROL_CALL = st.text(min_size=1, max_size=24).flatmap(
    lambda call_id: st.builds(
        control.SnapshotCall,
        typed(control.CallStarted, NONEMPTY, call_id=st.just(call_id)),
        typed(control.CallStats, NONEMPTY, call_id=st.just(call_id)),
        st.none() | st.floats(allow_nan=False, allow_infinity=False) | NONEMPTY[str],
    )
)
ROUND_TRIPS: dict[type[Encodable], tuple[Any, Callable[[Any], object]]] = {
    control.SnapshotCall: (CONTROL_CALL, control.SnapshotCall.decode),
    control.Snapshot: (
        st.builds(
            control.Snapshot,
            st.lists(CONTROL_CALL, max_size=2).map(tuple),
            st.none() | typed(control.InstanceStatus, NONEMPTY),
        ),
        control.Snapshot.decode,
    ),
    control.Error: (typed(control.Error), control.Error.decode),
    **{
        cls: (typed(cls), lambda d: control.decode_command(json.dumps(d), 1 << 20))
        for cls in (
            control.InjectSuggestion,
            control.Hangup,
            control.CancelSuggestion,
            control.RequestSnapshot,
            control.Ping,
        )
    },
    operator.AuthResult: (typed(operator.AuthResult), operator.AuthResult.decode),
    operator.Snapshot: (typed(operator.Snapshot, NONEMPTY), operator.Snapshot.decode),
    operator.Batch: (
        typed(
            operator.Batch,
            events=st.lists(st.fixed_dictionaries({"type": st.text()}), max_size=2).map(tuple),
        ),
        operator.Batch.decode,
    ),
    **{
        cls: (
            typed(cls, NONEMPTY, priority=st.sampled_from(control.PRIORITIES)),
            lambda d: operator.decode_command(json.dumps(d)),
        )
        for cls in (
            operator.Auth,
            operator.Subscribe,
            operator.Ping,
            operator.InjectSuggestion,
            operator.Hangup,
            operator.Watch,
        )
    },
}
WRITTEN_ONLY = {operator.InstanceState, operator.InstanceRemoved}


def _wire_records() -> list[type[Encodable]]:
    return [
        cls
        for module in (control, operator)
        for cls in vars(module).values()
        if isinstance(cls, type)
        and issubclass(cls, Encodable)
        and cls.__module__ == module.__name__
    ]


def test_every_wire_record_is_read_back_or_named_as_written_only() -> None:
    unaccounted = {
        cls
        for cls in _wire_records()
        if not issubclass(cls, Lenient) and cls not in ROUND_TRIPS and cls not in WRITTEN_ONLY
    }
    assert not unaccounted


@pytest.mark.parametrize(
    "cls",
    [cls for cls in _wire_records() if cls not in WRITTEN_ONLY],
    ids=lambda cls: f"{cls.__module__}.{cls.__name__}",
)
def test_every_wire_record_reads_back_what_it_wrote(cls: type[Encodable]) -> None:
    records, decode = ROUND_TRIPS.get(cls) or (typed(cls, NONEMPTY), cls.decode)  # type: ignore[attr-defined]

    @settings(max_examples=40, deadline=None, database=None)
    @given(records)
    def round_trip(record: Encodable) -> None:
        assert decode(json.loads(json.dumps(record.encode(), allow_nan=False))) == record

    round_trip()
