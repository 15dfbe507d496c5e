"""`aeth-emu export`: a trace (version 1 or 2, plain or compressed) to Parquet, read back with pyarrow."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import tomllib
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emulator.errors import OutputError, UsageError
from emulator.layout import HEAP_START
from emulator.trace import parquet
from emulator.trace.events import AllocEvent, HeapState
from emulator.trace.format import TraceWriter, read_trace
from tests.support.paths import KERNEL, ROOT

HEADER = {"image": "none.elf", "image_sha256": "0" * 64, "cmdline": "test", "allocator": None, "entry_points": []}
END = {"stop_reason": "exit", "exit_code": 0, "instructions": 5000, "cycles": 9000, "live_blocks": 1,
       "live_bytes": 4096}
EVENTS = [
    AllocEvent(0, "alloc", 8, 1, result=HEAP_START, returned=True, insn_entry=100, insn_return=140, cycles_entry=7,
               cycles_return=90, caller="aetherion::demo::run+0x10", call_site=0x2201010, return_address=0x2201015,
               backtrace=("aetherion::demo::run+0x10", "aetherion::kmain+0x40"), frames=(0x2203045,),
               heap=HeapState(used=16, free=1048560, free_blocks=1, live_blocks=1, live_bytes=8)),
    AllocEvent(1, "realloc", 16, 1, ptr=HEAP_START, old_size=8, result=HEAP_START + 0x10, returned=True,
               insn_entry=200, insn_return=260, cycles_entry=300, cycles_return=420, depth=0,
               caller="alloc::raw_vec::grow+0x22", call_site=0x2202022, return_address=0x2202027,
               heap=HeapState(used=32, free=1048544, free_blocks=2, live_blocks=1, live_bytes=16)),
    AllocEvent(2, "alloc", 4096, 4096, result=HEAP_START + 0x1000, returned=True, insn_entry=230, insn_return=250,
               cycles_entry=350, cycles_return=400, depth=1, caller="aetherion::demo::run+0x30",
               call_site=0x2201030, return_address=0x2201035),
    AllocEvent(3, "dealloc", 16, 1, ptr=HEAP_START + 0x10, returned=True, insn_entry=500, insn_return=530,
               cycles_entry=900, cycles_return=950, caller="aetherion::demo::run+0x50", call_site=0x2201050,
               return_address=0x2201055, heap=HeapState(used=4096, free=1044480, free_blocks=None, live_blocks=1,
                                                        live_bytes=4096)),
    AllocEvent(4, "alloc_error", 1 << 21, 8, returned=False, insn_entry=700, cycles_entry=1200,
               caller="aetherion::demo::oom+0x8", call_site=0x2204008, return_address=0xffff_ffff_ffff_fff0),
]
EVENTS = [e if e.backtrace else replace(e, backtrace=(e.caller,)) for e in EVENTS]  # as the tracer makes them
VIOLATION = {"seq": 3, "kind": "double-free", "message": "#3 dealloc of a block #1 already freed"}


def column(event: AllocEvent, name: str):
    """What the export must hold for `event` in column `name`."""
    if name.startswith("heap_"):
        return getattr(event.heap, name[len("heap_"):])
    if name in ("live_blocks", "live_bytes"):
        return getattr(event.heap, name)
    value = getattr(event, name)
    return list(value) if name == "backtrace" else value


def write_v2(path, events=EVENTS, end=END, violations=(VIOLATION,)):
    writer = TraceWriter(path, HEADER)
    for event in events:
        writer.event(event)
    for record in violations:
        writer.violation(record)
    writer.close(end)


def aeth(*args: str, prelude: str = "") -> subprocess.CompletedProcess:
    code = f"import sys\n{prelude}\nfrom emulator.cli.main import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def one_line_error(done: subprocess.CompletedProcess, code: int, message: str) -> None:
    assert done.returncode == code, done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aeth-emu: error: ") and message in lines[0], done.stderr


@pytest.mark.boot
def test_a_real_traced_boot_exports_every_event_exactly(tmp_path):
    trace_path, out = tmp_path / "t.jsonl.zst", tmp_path / "t.parquet"
    done = subprocess.run([sys.executable, "-m", "emulator", "trace", str(KERNEL), "--cmdline", "test",
                           "-o", str(trace_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    trace = read_trace(trace_path)
    assert len(trace.events) > 1000
    done = aeth("export", str(trace_path), "-o", str(out))
    assert done.returncode == 0 and done.stdout == "", done.stderr
    assert done.stderr.strip() == f"aeth-emu: {len(trace.events)} events written to {out}"
    table = pq.read_table(out)
    assert table.num_rows == len(trace.events)
    assert table.column_names == [name for name, *_ in parquet.COLUMNS]
    for name in table.column_names:  # every column, every row, exactly (addresses above 2^53 included)
        assert table.column(name).to_pylist() == [column(e, name) for e in trace.events], name
    assert table.column("backtrace").to_pylist()[0][0] == trace.events[0].caller
    # nulls exactly where the event has None: a dealloc has no result, an alloc no ptr
    result = table.column("result")
    assert result.null_count == sum(e.result is None for e in trace.events) > 0
    assert {e.kind for e, r in zip(trace.events, result.to_pylist()) if r is None} == {"dealloc"}
    assert table.column("ptr").null_count == sum(e.ptr is None for e in trace.events) > 0
    meta = pq.read_metadata(out).metadata
    assert json.loads(meta[b"aeth.header"]) == trace.header and trace.header["cmdline"] == "test"
    assert json.loads(meta[b"aeth.end"]) == trace.end and trace.end["stop_reason"] == "exit"
    assert json.loads(meta[b"aeth.violations"]) == list(trace.violations) == []


@pytest.mark.unit
@pytest.mark.parametrize("name", ["t.jsonl", "t.jsonl.zst"])
def test_types_nulls_and_metadata_of_a_written_trace(tmp_path, name):
    write_v2(tmp_path / name)
    trace = read_trace(tmp_path / name)
    assert trace.events == tuple(EVENTS)
    out = tmp_path / "t.parquet"
    assert parquet.export(trace, out) == 5
    table = pq.read_table(out)
    for field_name in table.column_names:
        assert table.column(field_name).to_pylist() == [column(e, field_name) for e in EVENTS], field_name
    schema = table.schema
    assert pa.types.is_dictionary(schema.field("kind").type) and pa.types.is_dictionary(schema.field("caller").type)
    assert schema.field("backtrace").type == pa.list_(pa.string())
    assert schema.field("result").type == pa.uint64() and schema.field("result").nullable
    assert schema.field("returned").type == pa.bool_()
    assert schema.field("return_address").type == pa.uint64() and not schema.field("return_address").nullable
    assert table.column("return_address").to_pylist()[4] == 0xffff_ffff_ffff_fff0  # above 2^63: still exact
    assert table.column("insn_return").to_pylist() == [140, 260, 250, 530, None]
    assert table.column("cycles_return").to_pylist() == [90, 420, 400, 950, None]
    assert table.column("result").to_pylist() == [HEAP_START, HEAP_START + 0x10, HEAP_START + 0x1000, None, None]
    assert table.column("old_size").to_pylist() == [None, 8, None, None, None]
    assert table.column("heap_free_blocks").to_pylist() == [1, 2, None, None, None]
    assert table.column("returned").to_pylist() == [True, True, True, True, False]
    assert table.column("depth").to_pylist() == [0, 0, 1, 0, 0]
    meta = pq.read_metadata(out).metadata
    assert json.loads(meta[b"aeth.header"]) == {"format": "aeth-trace", "version": 2, **HEADER}
    assert json.loads(meta[b"aeth.end"]) == END
    assert json.loads(meta[b"aeth.violations"]) == [VIOLATION]


@pytest.mark.unit
def test_batches_become_row_groups_with_the_same_values(tmp_path, monkeypatch):
    write_v2(tmp_path / "t.jsonl")
    monkeypatch.setattr(parquet, "BATCH", 2)
    out = tmp_path / "t.parquet"
    parquet.export(read_trace(tmp_path / "t.jsonl"), out)
    assert pq.ParquetFile(out).num_row_groups == 3
    table = pq.read_table(out)
    assert table.column("kind").to_pylist() == ["alloc", "realloc", "alloc", "dealloc", "alloc_error"]
    assert table.column("caller").to_pylist() == [e.caller for e in EVENTS]  # each batch its own dictionary
    assert table.column("seq").to_pylist() == [0, 1, 2, 3, 4]


@pytest.mark.unit
def test_a_version_1_trace_exports(tmp_path):
    path = tmp_path / "v1.jsonl"
    header = {"format": "aeth-trace", "version": 1, "image": "none.elf", "image_sha256": "0" * 64, "cmdline": "",
              "allocator": None, "entry_points": ["alloc", "dealloc"]}
    first = {"seq": 0, "kind": "alloc", "size": 8, "align": 1, "result": f"{HEAP_START:#x}", "returned": True,
             "insn_entry": 100, "insn_return": 140, "cycles_entry": 5, "cycles_return": 60,
             "call_site": "0x2201010", "return_address": "0x2201015", "caller": "aetherion::demo::run+0x10",
             "backtrace": ["aetherion::demo::run+0x10", "aetherion::kmain+0x40"], "depth": 0,
             "heap": {"used": 16, "free": 1048560, "free_blocks": 1, "live_blocks": 1, "live_bytes": 8,
                      "free_list": [[f"{HEAP_START + 0x10:#x}", 1048560]]}}
    second = {"seq": 1, "kind": "dealloc", "size": 8, "align": 1, "ptr": f"{HEAP_START:#x}", "returned": False,
              "insn_entry": 300, "cycles_entry": 400, "call_site": "0x2201050", "return_address": "0x2201055",
              "caller": "aetherion::demo::run+0x50", "backtrace": [], "depth": 0}
    violation = {"seq": 1, "kind": "invalid-free", "message": "#1 frees a block no event allocated"}
    lines = [header, {"event": first}, {"event": second}, {"violation": violation}, {"end": {"exit_code": 0}}]
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    out = tmp_path / "v1.parquet"
    done = aeth("export", str(path), "-o", str(out))
    assert done.returncode == 0 and done.stderr.strip() == f"aeth-emu: 2 events written to {out}", done.stderr
    table = pq.read_table(out)
    assert table.num_rows == 2
    assert table.column("result").to_pylist() == [HEAP_START, None]
    assert table.column("ptr").to_pylist() == [None, HEAP_START]
    assert table.column("insn_return").to_pylist() == [140, None]
    assert table.column("cycles_return").to_pylist() == [60, None]
    assert table.column("call_site").to_pylist() == [0x2201010, 0x2201050]
    assert table.column("backtrace").to_pylist() == [["aetherion::demo::run+0x10", "aetherion::kmain+0x40"], []]
    assert table.column("heap_used").to_pylist() == [16, None]  # the second event has no heap record
    assert table.column("live_bytes").to_pylist() == [8, 0]
    meta = pq.read_metadata(out).metadata
    assert json.loads(meta[b"aeth.header"]) == header
    assert json.loads(meta[b"aeth.end"]) == {"exit_code": 0}
    assert json.loads(meta[b"aeth.violations"]) == [violation]


@pytest.mark.unit
def test_a_trace_cut_off_before_any_event_is_an_empty_table(tmp_path):
    write_v2(tmp_path / "t.jsonl", events=(), end=None, violations=())
    out = tmp_path / "t.parquet"
    assert parquet.export(read_trace(tmp_path / "t.jsonl"), out) == 0
    table = pq.read_table(out)
    assert table.num_rows == 0 and table.column_names == [name for name, *_ in parquet.COLUMNS]
    meta = pq.read_metadata(out).metadata
    assert meta[b"aeth.end"] == b"null" and meta[b"aeth.violations"] == b"[]"


@pytest.mark.unit
def test_cli_errors_are_one_line_with_their_exit_code(tmp_path):
    trace_path = tmp_path / "t.jsonl"
    write_v2(trace_path)
    before = trace_path.read_bytes()
    one_line_error(aeth("export", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o.parquet")), 2,
                   f"cannot read trace {tmp_path / 'missing.jsonl'}: no such file")
    one_line_error(aeth("export", str(trace_path), "-o", str(trace_path)), 2, "is the input")
    (tmp_path / "link.parquet").symlink_to(trace_path)
    one_line_error(aeth("export", str(trace_path), "-o", str(tmp_path / "link.parquet")), 2, "is the input")
    assert trace_path.read_bytes() == before
    folder = tmp_path / "folder"
    folder.mkdir()
    one_line_error(aeth("export", str(trace_path), "-o", str(folder)), 5, "it is a directory")
    assert list(folder.iterdir()) == []
    one_line_error(aeth("export", str(trace_path), "-o", "/dev/full"), 5, "No space left on device")
    one_line_error(aeth("export", str(trace_path), "-o", str(tmp_path / "no" / "such" / "dir.parquet")), 5,
                   "No such file or directory")
    one_line_error(aeth("export", str(trace_path)), 2, "the following arguments are required: -o/--output")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "link.parquet", "t.jsonl"]  # nothing left over


@pytest.mark.unit
def test_without_pyarrow_the_error_says_what_to_install(tmp_path):
    write_v2(tmp_path / "t.jsonl")
    done = aeth("export", str(tmp_path / "t.jsonl"), "-o", str(tmp_path / "t.parquet"),
                prelude="sys.modules['pyarrow'] = None")  # an import of pyarrow now fails
    one_line_error(done, 2, "pip install 'aeth-emu[parquet]'")
    assert not (tmp_path / "t.parquet").exists()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "pyarrow", None)
        mp.setitem(sys.modules, "pyarrow.parquet", None)
        with pytest.raises(UsageError, match=r"pyarrow.*pip install 'aeth-emu\[parquet\]'"):
            parquet.export(read_trace(tmp_path / "t.jsonl"), tmp_path / "t.parquet")


@pytest.mark.unit
def test_the_install_hint_names_this_project_and_its_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert parquet.PIP_HINT == f"pip install '{project['name']}[parquet]'"
    assert extras["parquet"] == ["pyarrow>=15"]
    assert "pyarrow>=15" in extras["test"]  # the suite runs these tests in CI: `make test` installs .[test]


@pytest.mark.unit
def test_pyarrow_is_not_imported_at_start_up():
    code = ("import sys, emulator.cli.main, emulator.cli.commands, emulator.trace.parquet; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pyarrow'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


@pytest.mark.unit
def test_an_existing_file_is_replaced_atomically_and_keeps_its_mode(tmp_path):
    write_v2(tmp_path / "t.jsonl")
    out = tmp_path / "t.parquet"
    out.write_bytes(b"old")
    os.chmod(out, 0o640)
    parquet.export(read_trace(tmp_path / "t.jsonl"), out)
    assert pq.read_table(out).num_rows == 5 and stat.S_IMODE(out.stat().st_mode) == 0o640
    link = tmp_path / "link.parquet"  # a symlink is written through, and stays a link
    link.symlink_to(out)
    parquet.export(read_trace(tmp_path / "t.jsonl"), link)
    assert link.is_symlink() and pq.read_table(out).num_rows == 5


@pytest.mark.unit
def test_a_full_disk_is_one_output_error_and_leaves_the_old_file(tmp_path, monkeypatch):
    write_v2(tmp_path / "t.jsonl")
    trace = read_trace(tmp_path / "t.jsonl")
    out = tmp_path / "t.parquet"
    out.write_bytes(b"the previous export")
    monkeypatch.setattr(parquet, "BATCH", 2)
    written = []

    def write_batch(self, batch, *args, **kwargs):
        if written:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # the disk fills up at the second batch
        written.append(batch)

    monkeypatch.setattr(pq.ParquetWriter, "write_batch", write_batch)
    with pytest.raises(OutputError, match=f"cannot write the Parquet file {out}: No space left on device") as caught:
        parquet.export(trace, out)
    assert caught.value.exit_code == 5 and len(written) == 1
    assert out.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.jsonl", "t.parquet"]  # no temporary file left


def test_a_reader_that_closes_the_pipe_ends_the_export_quietly(tmp_path):
    trace = tmp_path / "t.jsonl"
    write_v2(trace, events=EVENTS * 2000)
    process = subprocess.Popen([sys.executable, "-m", "emulator", "export", str(trace), "-o", "/dev/stdout"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader goes away before the export writes a byte (a pipe's buffer
    # would otherwise take a small file whole, and the export would end before the reader left)
    err = process.stderr.read()
    assert process.wait(timeout=60) == 141 and err == b""  # as a shell reports a tool ended by SIGPIPE
