"""Ctrl-C (twice) during a run still leaves a whole trace, a report and the serial output."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from emulator.trace.format import read_trace
from tests.support.guest import build, fake_allocator
from tests.support.processes import communicate_or_kill

pytestmark = pytest.mark.boot

FOREVER = fake_allocator(0) + """
.function main, forever::main
main:
    push rbp
    mov rbp, rsp
    mov dx, COM1
    mov al, 'x'
    out dx, al
.Lagain:
    mov edi, 32
    mov esi, 8
    call __rust_alloc
    mov rdi, rax
    mov esi, 32
    mov edx, 8
    call __rust_dealloc
    jmp .Lagain
.endfunction
"""


def start(tmp_path, *args):
    image = build(tmp_path, FOREVER)
    return subprocess.Popen([sys.executable, "-m", "emulator", *args, str(image)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def interrupt_twice(process, after: float = 2.0):
    time.sleep(after)
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    return communicate_or_kill(process, timeout=60)


def test_trace_survives_two_ctrl_c(tmp_path):
    trace = tmp_path / "t.jsonl"
    process = start(tmp_path, "trace", "-o", str(trace))
    out, err = interrupt_twice(process)
    assert process.returncode == 4, err
    assert out == "x" and "Traceback" not in err and "interrupted by Ctrl-C" in err
    assert trace.read_text().endswith("\n")  # the last line is whole
    parsed = read_trace(trace)
    assert len(parsed.events) > 100 and parsed.end["stop_reason"] == "interrupted"
    assert [e.kind for e in parsed.events[:4]] == ["alloc", "dealloc", "alloc", "dealloc"]


def test_report_survives_ctrl_c(tmp_path):
    report = tmp_path / "r.json"
    process = start(tmp_path, "boot", "--report", str(report))
    out, err = interrupt_twice(process, after=1.5)
    assert process.returncode == 4 and out == "x"
    data = json.loads(report.read_text())
    assert data["stop_reason"] == "interrupted" and data["serial"] == "x" and data["instructions"] > 1000


SPEAK_THEN_SPIN = """
.function main, speak::main
main:
    mov dx, COM1
    mov al, 'h'
    out dx, al
    mov al, 10
    out dx, al
.Lspin:
    jmp .Lspin
.endfunction
"""


def test_serial_output_streams_live_while_the_guest_runs(tmp_path):
    image = build(tmp_path, SPEAK_THEN_SPIN)
    process = subprocess.Popen([sys.executable, "-m", "emulator", "boot", str(image)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()  # arrives while the guest still spins, not at the end of the run
    alive = process.poll() is None
    process.send_signal(signal.SIGINT)
    communicate_or_kill(process, timeout=60)
    assert line == "h\n" and alive and process.returncode == 4
