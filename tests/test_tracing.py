"""Allocation tracing: the demo's exact event sequence, pairing, trace files, the stepper,
seeded allocator bugs caught with call sites, and v0-mangled shims."""

from __future__ import annotations

import subprocess
import sys

import pytest

from emulator import boot
from emulator.layout import HEAP_START
from emulator.trace.format import read_trace
from tests.support.guest import build, fake_allocator

pytestmark = pytest.mark.boot


def test_demo_event_sequence_is_rusts(booted):
    run = booted("")
    got = [(e.kind, e.size, e.align, e.old_size) for e in run.events]
    assert got == [
        ("alloc", 16, 4, None),        # Vec<i32>::push(1): first capacity 4
        ("alloc", 9, 1, None),         # String::from("Aetherion"): exact length
        ("realloc", 18, 1, 9),         # push_str(" OS"): max(2 * 9, 12)
        ("alloc", 4, 4, None),         # Box::new(42)
        ("dealloc", 4, 4, None),       # drops in reverse order
        ("dealloc", 18, 1, None),
        ("dealloc", 16, 4, None),
    ]
    vec, string, grown, box = run.events[:4]
    assert grown.ptr == string.result  # the pointer the guest kept is the one it hands back
    assert [e.ptr for e in run.events[4:]] == [box.result, grown.result, vec.result]
    assert all(e.returned and e.depth == 0 for e in run.events)
    assert vec.caller.startswith("alloc::raw_vec::RawVec::grow_amortized+0x")
    assert vec.backtrace[1].startswith("alloc::vec::Vec::push_i32+0x")
    assert "aetherion::demo::run+0x" in vec.backtrace[2]
    assert box.caller.startswith("alloc::boxed::Box::new_i32+0x")
    assert all(e.insn_entry < e.insn_return for e in run.events)
    assert [e.seq for e in run.events] == list(range(7))


def test_bump_results_are_where_the_bump_pointer_was(booted):
    run = booted("allocator=bump")
    vec, string, grown, box = run.events[:4]
    assert vec.result == HEAP_START
    assert string.result == vec.result + 16
    assert grown.result == string.result  # the last block grew in place
    assert box.result == grown.result + 18 + 2  # aligned up to 4
    assert box.heap.used == 40 and box.heap.live_bytes == 16 + 18 + 4


def test_call_from_the_host_is_traced_and_returns_the_guests_pointer(booted, kernel):
    run = boot(str(kernel))
    ptr = run.call("__rust_alloc", 64, 8)
    assert ptr % 8 == 0 and HEAP_START <= ptr < HEAP_START + 0x100000
    stats = run.machine.call_sret("aetherion::allocator::heap_stats", 24)
    assert int.from_bytes(stats[8:16], "little") == 64  # used


def test_trace_file_round_trip_and_stats(tmp_path, kernel):
    out = tmp_path / "boot.jsonl"
    done = subprocess.run([sys.executable, "-m", "emulator", "trace", str(kernel), "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Aetherion OS" in done.stdout and "7 events written" in done.stderr
    trace = read_trace(out)
    live = boot(str(kernel))
    assert [e.to_json() for e in trace.events] == [e.to_json() for e in live.events]
    assert trace.header["image_sha256"] == live.machine.image.sha256
    assert trace.end["stop_reason"] == "exit" and trace.end["live_blocks"] == 0


def test_step_through_a_real_boot_with_piped_input(tmp_path, kernel):
    done = subprocess.run([sys.executable, "-m", "emulator", "step", str(kernel)],
                          input="n\nc realloc\nc dealloc\nq\n", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    headers = [line for line in done.stdout.splitlines() if line.startswith("event ")]
    assert [h.split()[1] for h in headers] == ["1/7", "2/7", "3/7", "5/7"]
    assert "#2 realloc(" in headers[2] and "new_size=18" in headers[2]
    assert "=> alloc::vec::Vec::push_i32" not in done.stdout  # the marked line is the call itself
    assert "call __rust_realloc" in done.stdout and f"heap: {HEAP_START:#x} [" in done.stdout


def seeded(tmp_path, body: str, step: int = 64):
    source = fake_allocator(step) + f"""
.function main, buggy::main
main:
    push rbp
    mov rbp, rsp
    push rbx
    sub rsp, 8
{body}
    add rsp, 8
    pop rbx
    pop rbp
    ret
.endfunction
"""
    return boot(build(tmp_path, source), check=True)


ALLOC_64 = "    mov edi, 64\n    mov esi, 8\n    call __rust_alloc\n    mov rbx, rax\n"
FREE_RBX = "    mov rdi, rbx\n    mov esi, 64\n    mov edx, 8\n    call __rust_dealloc\n"


def test_double_free_is_reported_with_both_call_sites(tmp_path):
    run = seeded(tmp_path, ALLOC_64 + FREE_RBX + FREE_RBX)
    assert [v.kind for v in run.violations] == ["double-free"]
    message = run.violations[0].message
    assert message.count("buggy::main+0x") == 2 and "already freed by #1" in message


def test_foreign_free_is_reported(tmp_path):
    run = seeded(tmp_path, "    mov edi, 0x2000000\n    mov esi, 16\n    mov edx, 8\n    call __rust_dealloc\n")
    assert [v.kind for v in run.violations] == ["invalid-free"]
    assert "0x2000000" in run.violations[0].message and "buggy::main+0x" in run.violations[0].message


def test_overlapping_blocks_are_reported(tmp_path):
    run = seeded(tmp_path, ALLOC_64 + ALLOC_64, step=32)  # 64-byte blocks 32 bytes apart
    assert [v.kind for v in run.violations] == ["overlap"]
    assert "[0x1000020, 0x1000060)" in run.violations[0].message


def test_v0_mangled_shims_are_traced(tmp_path):
    source = """
.function _RNvCs1a2b3c_7___rustc12___rust_alloc
_RNvCs1a2b3c_7___rustc12___rust_alloc:
    push rbp
    mov rbp, rsp
    mov eax, 0x1000000
    pop rbp
    ret
.endfunction
.function main, app::main
main:
    push rbp
    mov rbp, rsp
    mov edi, 24
    mov esi, 8
    call _RNvCs1a2b3c_7___rustc12___rust_alloc
    pop rbp
    ret
.endfunction
"""
    run = boot(build(tmp_path, source))
    assert run.symbols.get("__rust_alloc").raw == "_RNvCs1a2b3c_7___rustc12___rust_alloc"
    assert [(e.kind, e.size, e.align, e.result) for e in run.events] == [("alloc", 24, 8, 0x1000000)]
    assert run.events[0].caller.startswith("app::main+0x")


def test_calls_from_the_host_are_traced_and_checked(kernel):
    run = boot(str(kernel))
    before = len(run.events)
    ptr = run.call("__rust_alloc", 64, 8)
    run.call("__rust_dealloc", ptr, 64, 8)
    run.call("__rust_dealloc", ptr, 64, 8)  # a double free, made from the host
    host = run.events[before:]
    assert [(e.kind, e.returned, e.return_address) for e in host] == [("alloc", True, 0), ("dealloc", True, 0),
                                                                     ("dealloc", True, 0)]
    assert host[0].result == ptr and host[0].insn_entry < host[0].insn_return
    assert [v.kind for v in run.violations if v.seq == host[2].seq][:1] == ["double-free"]
