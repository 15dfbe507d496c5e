"""Trace files round-trip; stats and the stepper work on them, scripted through pipes."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from emulator.errors import TraceFormatError
from emulator.layout import HEAP_START
from emulator.report.trace_summary import size_bucket, summarize
from emulator.trace.events import AllocEvent, HeapState
from emulator.trace.format import TraceWriter, read_trace

pytestmark = pytest.mark.boot

EVENTS = [
    AllocEvent(0, "alloc", 8, 1, result=HEAP_START, returned=True, insn_entry=100, insn_return=140,
               caller="aetherion::demo::run+0x10", call_site=0x2201010, return_address=0x2201015,
               backtrace=("aetherion::demo::run+0x10", "aetherion::kmain+0x40"), frames=(0x2203045,),
               heap=HeapState(used=16, free=1048560, free_blocks=1, live_blocks=1, live_bytes=8)),
    AllocEvent(1, "realloc", 16, 1, ptr=HEAP_START, old_size=8, result=HEAP_START + 0x10, returned=True,
               caller="alloc::raw_vec::grow+0x22", call_site=0x2202022, return_address=0x2202027),
    AllocEvent(2, "alloc", 4096, 4096, result=HEAP_START + 0x1000, returned=True, caller="aetherion::demo::run+0x30",
               call_site=0x2201030, return_address=0x2201035),
    AllocEvent(3, "dealloc", 16, 1, ptr=HEAP_START + 0x10, returned=True, caller="aetherion::demo::run+0x50",
               call_site=0x2201050, return_address=0x2201055),
    AllocEvent(4, "alloc_error", 1 << 21, 8, returned=False, caller="aetherion::demo::oom+0x8", call_site=0x2204008,
               return_address=0x220400d),
]
# as the tracer makes them: a backtrace starts with the call site
EVENTS = [e if e.backtrace else replace(e, backtrace=(e.caller,)) for e in EVENTS]


def write(path, events=EVENTS, end=True):
    writer = TraceWriter(path, {"image": "none.elf", "image_sha256": "0" * 64, "cmdline": "test", "allocator": None,
                                "entry_points": []})
    for event in events:
        writer.event(event)
    writer.close({"stop_reason": "exit", "exit_code": 0} if end else None)


@pytest.mark.parametrize("name", ["t.jsonl", "t.jsonl.zst"])
def test_round_trip_preserves_every_field(tmp_path, name):
    path = tmp_path / name
    write(path)
    trace = read_trace(path)
    assert trace.events == tuple(EVENTS)
    assert trace.header["cmdline"] == "test" and trace.end == {"stop_reason": "exit", "exit_code": 0}
    if name.endswith(".jsonl"):
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert lines[1] == {"site": [0x2201015, 0x2201010, "aetherion::demo::run+0x10"]}
        assert lines[2] == {"site": [0x2203045, None, "aetherion::kmain+0x40"]}
        assert lines[3]["e"][:8] == [0, "alloc", 8, 1, None, None, HEAP_START, 1]
        assert lines[3]["e"][-2:] == [[0x2203045], None]  # its frames, and no handler vector
        assert lines[3]["h"] == [16, 1048560, 1, 1, 8]


def test_a_version_1_trace_still_reads(tmp_path):
    path = tmp_path / "v1.jsonl"
    header = {"format": "aeth-trace", "version": 1, "image": "none.elf", "image_sha256": "0" * 64, "cmdline": "",
              "allocator": None, "entry_points": ["alloc"]}
    event = {"seq": 0, "kind": "alloc", "size": 8, "align": 1, "result": f"{HEAP_START:#x}", "returned": True,
             "insn_entry": 100, "insn_return": 140, "call_site": "0x2201010", "return_address": "0x2201015",
             "caller": "aetherion::demo::run+0x10", "backtrace": ["aetherion::demo::run+0x10"], "depth": 0,
             "heap": {"used": 16, "free": 1048560, "free_blocks": 1, "live_blocks": 1, "live_bytes": 8,
                      "free_list": [[f"{HEAP_START + 0x10:#x}", 1048560]]}}
    path.write_text("\n".join(json.dumps(r) for r in (header, {"event": event}, {"end": {"exit_code": 0}})) + "\n")
    trace = read_trace(path)
    assert trace.header["version"] == 1 and trace.end == {"exit_code": 0}
    (got,) = trace.events
    assert (got.result, got.caller, got.heap.free_list) == (HEAP_START, "aetherion::demo::run+0x10",
                                                            ((HEAP_START + 0x10, 1048560),))


def test_a_compressed_trace_cut_by_a_hard_kill_keeps_its_whole_frames(tmp_path):
    path = tmp_path / "t.jsonl.zst"
    writer = TraceWriter(path, {"image": None, "image_sha256": None, "cmdline": "", "allocator": None,
                                "entry_points": []})
    for event in EVENTS[:2]:
        writer.event(event)
    writer.flush()  # one batch: one zstd frame
    whole = path.stat().st_size
    for event in EVENTS[2:]:
        writer.event(event)
    writer.flush()
    data = path.read_bytes()
    path.write_bytes(data[: whole + (len(data) - whole) // 2])  # killed while writing the second frame
    assert [e.seq for e in read_trace(path).events] == [0, 1]


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
    assert "free list: 1 block (not recorded per event)" in out  # event 1: the guest's summary, from the trace
    assert "\x1b[" not in out  # plain text when piped


def test_step_at_the_end_says_so(tmp_path):
    path = tmp_path / "t.jsonl"
    write(path, EVENTS[:1])
    done = aeth("step", str(path), stdin="n\n")
    assert "end of trace (1 events)" in done.stdout
