"""Trace files round-trip; stats and the stepper work on them, scripted through pipes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from emulator.errors import TraceFormatError
from emulator.layout import HEAP_START
from emulator.report.trace_summary import size_bucket, summarize
from emulator.trace.events import AllocEvent, HeapState
from emulator.trace.format import TraceWriter, read_trace

pytestmark = pytest.mark.boot

EVENTS = [
    AllocEvent(0, "alloc", 8, 1, result=HEAP_START, returned=True, insn_entry=100, insn_return=140,
               caller="aetherion::demo::run+0x10", call_site=0x2201010, backtrace=("aetherion::demo::run+0x10", "aetherion::kmain+0x40"),
               heap=HeapState(used=16, free=1048560, free_blocks=1, live_blocks=1, live_bytes=8,
                              free_list=((HEAP_START + 0x10, 1048560),))),
    AllocEvent(1, "realloc", 16, 1, ptr=HEAP_START, old_size=8, result=HEAP_START + 0x10, returned=True,
               caller="alloc::raw_vec::grow+0x22", call_site=0x2202022),
    AllocEvent(2, "alloc", 4096, 4096, result=HEAP_START + 0x1000, returned=True, caller="aetherion::demo::run+0x30"),
    AllocEvent(3, "dealloc", 16, 1, ptr=HEAP_START + 0x10, returned=True, caller="aetherion::demo::run+0x50"),
    AllocEvent(4, "alloc_error", 1 << 21, 8, returned=False, caller="aetherion::demo::oom+0x8"),
]


def write(path, events=EVENTS, end=True):
    writer = TraceWriter(path, {"image": "none.elf", "image_sha256": "0" * 64, "cmdline": "test", "allocator": None,
                                "entry_points": []})
    for event in events:
        writer.event(event)
    writer.close({"stop_reason": "exit", "exit_code": 0} if end else None)


def test_round_trip_preserves_every_field(tmp_path):
    path = tmp_path / "t.jsonl"
    write(path)
    trace = read_trace(path)
    assert trace.events == tuple(EVENTS)
    assert trace.header["cmdline"] == "test" and trace.end == {"stop_reason": "exit", "exit_code": 0}
    first = json.loads(path.read_text().splitlines()[1])["event"]
    assert first["result"] == f"{HEAP_START:#x}" and first["heap"]["free_list"] == [[f"{HEAP_START + 0x10:#x}", 1048560]]


def test_trace_cut_mid_line_keeps_whole_lines(tmp_path):
    path = tmp_path / "t.jsonl"
    write(path, end=False)
    text = path.read_text()
    path.write_text(text[: len(text) - 20])  # a hard kill in the middle of the last line
    trace = read_trace(path)
    assert [e.seq for e in trace.events] == [0, 1, 2, 3] and trace.end is None


@pytest.mark.parametrize("content, message", [("", "empty"), ("{}\n", "not an aeth-emu trace"),
                                              ('{"format": "aeth-trace", "version": 9}\n', "version 9"),
                                              ("garbage\nmore\n", "not a JSON line")])
def test_bad_trace_files_are_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(TraceFormatError, match=message):
        read_trace(path)


def test_summary_counts_peak_histogram_and_sites():
    summary = summarize(EVENTS)
    assert summary["counts"] == {"alloc": 2, "dealloc": 1, "realloc": 1, "alloc_zeroed": 0, "alloc_error": 1}
    assert summary["peak_live_bytes"] == 16 + 4096
    assert summary["live_at_exit"] == {"blocks": 1, "bytes": 4096}
    assert summary["leaks"][0]["caller"] == "aetherion::demo::run+0x30"
    assert summary["size_histogram"] == {"8-15": 1, "16-31": 1, "4096-8191": 1}
    assert summary["top_sites_by_bytes"][0] == {"site": "aetherion::demo::run+0x30", "bytes": 4096}
    assert [size_bucket(n) for n in (0, 1, 2, 3, 4, 1023, 1024)] == ["0", "1", "2-3", "2-3", "4-7", "512-1023", "1024-2047"]


def aeth(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "emulator", *args], input=stdin, capture_output=True, text=True, timeout=60)


def test_stats_command_json(tmp_path):
    path = tmp_path / "t.jsonl"
    write(path)
    done = aeth("stats", str(path), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["events"] == 5 and summary["complete"] is True and summary["stop_reason"] == "exit"


def test_step_scripted_through_pipes(tmp_path):
    path = tmp_path / "t.jsonl"
    write(path)
    done = aeth("step", str(path), stdin="n\nc dealloc\np\ng 1\nc size>=1000\nc nothing-matches\nq\n")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    shown = [line.split()[1] for line in out.splitlines() if line.startswith("event ")]
    # start at 1, n -> 2, c dealloc -> 4, p -> 3, g 1 -> 1, c size>=1000 -> 3
    assert shown == ["1/5", "2/5", "4/5", "3/5", "1/5", "3/5"]
    assert "no later event matches 'nothing-matches'" in out
    assert f"#1 realloc({HEAP_START:#x}, old_size=8, align=1, new_size=16) -> {HEAP_START + 0x10:#x}" in out
    assert f"free list: {HEAP_START + 0x10:#x}+1048560" in out
    assert "\x1b[" not in out  # plain text when piped


def test_step_at_the_end_says_so(tmp_path):
    path = tmp_path / "t.jsonl"
    write(path, EVENTS[:1])
    done = aeth("step", str(path), stdin="n\n")
    assert "end of trace (1 events)" in done.stdout
