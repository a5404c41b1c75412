"""reload.json, which ``xswarm reloadctl`` reads while the service may be half way through
writing it: any content is a reload state or None (absent, torn, not ours), never an
exception; a state the service writes reads back as written."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.strategies import examples, json_values, objects_with
from xswarm.ops import reloadctl

states = st.builds(
    reloadctl.ReloadState,
    generation=st.integers(min_value=0, max_value=2**63),
    ok=st.booleans(),
    message=st.text(max_size=80),
    pid=st.none() | st.integers(min_value=1, max_value=2**22),
)


@examples(200)
@given(
    st.text(max_size=200)
    | json_values.map(json.dumps)
    | objects_with(["generation", "ok", "message", "pid"]).map(json.dumps)
)
def test_any_text_is_a_state_or_none(text: str) -> None:
    state = reloadctl.parse_state(text)
    assert state is None or isinstance(state, reloadctl.ReloadState)


@examples(100)
@given(states)
def test_a_written_state_reads_back(state: reloadctl.ReloadState) -> None:
    record = {
        "generation": state.generation,
        "ok": state.ok,
        "message": state.message,
        "pid": state.pid,
    }
    assert reloadctl.parse_state(json.dumps(record)) == state


@examples(100)
@given(st.binary(max_size=200))
def test_any_file_bytes_are_a_state_or_none(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "reload.json"
        path.write_bytes(raw)
        state = reloadctl.read_state(path)
        assert state is None or isinstance(state, reloadctl.ReloadState)


def test_found_cases_are_none() -> None:
    assert reloadctl.parse_state("[" * 100_000) is None  # RecursionError, not a ValueError
    assert reloadctl.parse_state('{"generation":' + "1" * 5000 + ',"ok":true}') is None


def test_a_file_that_is_not_utf8_is_none(tmp_path: Path) -> None:
    path = tmp_path / "reload.json"
    path.write_bytes(b'{"generation": 1, "ok": true, "message": "\xff"}')
    assert reloadctl.read_state(path) is None
