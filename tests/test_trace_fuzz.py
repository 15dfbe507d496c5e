"""Hypothesis-made trace files through `aeth-emu stats` and `aeth-emu step`: every one is read
(exit 0) or refused with one line (exit 2); nothing else may escape. `make fuzz` runs many more."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from emulator.cli.main import main
from emulator.trace.events import KINDS
from emulator.trace.format import FORMAT, FORMAT_VERSION

pytestmark = pytest.mark.unit

FUZZ = os.environ.get("AETH_FUZZ") == "1"
DATABASE = DirectoryBasedExampleDatabase(str(Path(__file__).parent / "fuzz-db"))

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["0x0", "0x1000", "0x" + "f" * 17, "0xzz", "1"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)
addresses = st.sampled_from(["0x444444440000", "0x444444440010", "0x10", "0x0"])
good_event = st.fixed_dictionaries({
    "seq": st.integers(0, 50), "kind": st.sampled_from(KINDS), "size": st.integers(0, 4096),
    "align": st.sampled_from([1, 8, 16, 4096]), "ptr": addresses, "old_size": st.integers(0, 64),
    "result": addresses, "returned": st.booleans(), "caller": st.text(max_size=20),
    "backtrace": st.lists(st.text(max_size=10), max_size=3),
    "heap": st.fixed_dictionaries({"used": st.integers(0, 1 << 20), "free_list": st.lists(
        st.tuples(addresses, st.integers(0, 1 << 20)).map(list), max_size=3)}),
})


@st.composite
def events(draw):
    """A good event with some fields replaced by anything, or removed."""
    event = draw(good_event)
    for field in draw(st.lists(st.sampled_from(sorted(event)), max_size=3, unique=True)):
        if draw(st.booleans()):
            event[field] = draw(values)
        else:
            del event[field]
    return event


records = st.one_of(
    events().map(lambda e: {"event": e}),
    st.fixed_dictionaries({"violation": st.fixed_dictionaries({"seq": st.integers(0, 9), "kind": values,
                                                               "message": values})}),
    st.fixed_dictionaries({"end": st.one_of(values, st.fixed_dictionaries({"stop_reason": values,
                                                                           "exit_code": values}))}),
    st.dictionaries(st.text(max_size=6), values, max_size=2),
    values,
)
headers = st.one_of(
    st.just({"format": FORMAT, "version": FORMAT_VERSION, "image": None, "cmdline": "", "entry_points": []}),
    st.fixed_dictionaries({"format": st.sampled_from([FORMAT, "other"]), "version": values, "image": values,
                           "entry_points": values}),
)


@settings(max_examples=3000 if FUZZ else 120, deadline=None, database=DATABASE,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(header=headers, body=st.lists(records, max_size=8), tail=st.sampled_from(["", "\n", "\n\n", '{"ev']))
def test_any_trace_is_read_or_refused_in_one_line(tmp_path, capsys, monkeypatch, header, body, tail):
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (header, *body)) + "\n" + tail)
    for argv, stdin in ((["stats", str(path), "--json"], ""), (["stats", str(path)], ""),
                        (["step", str(path)], "n\np\nc dealloc\ng 3\nc size>=8\nq\n")):
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = main(argv)  # anything but an EmulatorError would escape here and fail the test
        out, err = capsys.readouterr()
        assert code in (0, 2), err
        if code == 2:
            assert err.count("\n") == 1 and err.startswith("aeth-emu: error: ")
