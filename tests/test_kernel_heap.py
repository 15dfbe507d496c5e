"""Phase 1.3 seen from the host: both allocators, the in-kernel tests, the demo, the views."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from emulator.layout import HEAP_SIZE, HEAP_START

pytestmark = pytest.mark.boot

ALLOCATORS = ["linked_list", "bump"]


def kernel_tests(serial: str) -> dict[str, str]:
    return dict(re.findall(r"^test (\S+) \.\.\. (ok|FAILED|ignored.*)$", serial, re.M))


@pytest.mark.parametrize("allocator", ALLOCATORS)
def test_every_in_kernel_test_passes(booted, allocator):
    run = booted(f"test allocator={allocator}")
    assert run.exit_code == 0
    results = kernel_tests(run.serial)
    spec = ["allocator::bump::test_align_up", "allocator::bump::test_bump_allocator", "allocator::bump::test_allocation",
            "allocator::bump::test_out_of_memory", "allocator::bump::test_reset",
            "allocator::linked_list::test_linked_list_allocator", "allocator::linked_list::test_alloc_dealloc",
            "allocator::linked_list::test_multiple_allocs", "allocator::test_heap_stats"]
    assert all(results[name] == "ok" for name in spec)
    reuse = ["heap_allocation::many_boxes", "heap_allocation::many_boxes_long_lived", "heap_allocation::head_excess_reuse"]
    expected = "ignored, the bump allocator never reuses freed memory" if allocator == "bump" else "ok"
    assert [results[name] for name in reuse] == [expected] * 3
    assert results["heap_allocation::large_vec"] == results["heap_allocation::simple_allocation"] == "ok"
    memory = [n for n in results if n.startswith("memory::")]
    assert len(memory) >= 22 and all(results[n] == "ok" for n in memory)
    ignored = 3 if allocator == "bump" else 0
    assert f"test result: ok. {49 - ignored} passed; 0 failed; {ignored} ignored; 0 measured; 0 filtered out" in run.serial
    assert run.violations == ()


def test_filter_counts_filtered_out(booted):
    run = booted("test=test_align")
    assert "running 1 test\n" in run.serial
    assert "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 48 filtered out" in run.serial


@pytest.mark.parametrize("allocator, used", [("linked_list", 56), ("bump", 40)])
def test_demo_output(booted, allocator, used):
    run = booted(f"allocator={allocator}")
    assert run.exit_code == 0
    assert run.serial.splitlines()[2:] == [
        f"heap: {allocator} allocator, 1 MiB at {HEAP_START:#x}",
        "vec: [1, 2, 3] len=3",
        'string: "Aetherion OS" == "Aetherion OS": true',
        "box: 42",
        f"Heap size: {HEAP_SIZE} bytes",
        f"Used: {used} bytes",
        f"Free: {HEAP_SIZE - used} bytes",
    ]


@pytest.mark.parametrize("allocator", ALLOCATORS)
def test_printed_stats_equal_the_guest_structures_at_that_moment(booted, allocator):
    run = booted(f"allocator={allocator}")
    printed = {k: int(v) for k, v in re.findall(r"^(Used|Free): (\d+) bytes$", run.serial, re.M)}
    box = next(e for e in run.events if (e.kind, e.size, e.align) == ("alloc", 4, 4))
    # The demo prints its statistics between Box::new (this event) and the first drop.
    assert run.events[box.seq + 1].kind == "dealloc"
    assert (box.heap.used, box.heap.free) == (printed["Used"], printed["Free"])


def test_bump_view_is_next_minus_heap_start(booted):
    run = booted("allocator=bump")
    guest = run.heap.guest
    assert guest.allocator == "bump"
    assert guest.used == guest.bump["next"] - guest.bump["heap_start"] == 40  # the String grew in place
    assert guest.bump["heap_start"] == HEAP_START and guest.bump["heap_end"] == HEAP_START + HEAP_SIZE
    assert guest.bump["allocations"] == 0  # three allocations, three deallocations
    assert run.heap.views_agree is True


def test_linked_list_free_list_walk(booted):
    run = booted("")
    guest = run.heap.guest
    assert guest.problems == ()
    blocks = guest.free_list
    assert all(HEAP_START <= a and a + s <= HEAP_START + HEAP_SIZE for a, s in blocks)
    assert all(s >= 16 and s % 8 == 0 for _, s in blocks)
    assert len({a for a, _ in blocks}) == len(blocks)
    assert guest.free == sum(s for _, s in blocks) == HEAP_SIZE  # everything was dropped
    assert run.heap.kernel_stats == (HEAP_SIZE, 0, HEAP_SIZE)
    assert run.heap.views_agree is True


def test_many_boxes_reuse_heap_memory(booted):
    run = booted("test=many_boxes allocator=linked_list")
    boxes = [e for e in run.events if e.kind == "alloc" and e.size == 1024]
    assert len(boxes) == 2 * 2048
    assert len({e.result for e in boxes}) < 100  # a heap's worth twice over, from a handful of blocks
    assert run.heap.events.peak_live_bytes < 4096


def aeth(*args):
    return subprocess.run([sys.executable, "-m", "emulator", *args], capture_output=True, text=True, timeout=120)


def test_report_heap_section(tmp_path, kernel):
    report = tmp_path / "r.json"
    done = aeth("boot", str(kernel), "--cmdline", "allocator=bump", "--report", str(report))
    assert done.returncode == 0
    data = json.loads(report.read_text())
    assert data["heap"]["allocator"] == "bump"
    assert (data["heap"]["heap_size"], data["heap"]["used"], data["heap"]["free"]) == (HEAP_SIZE, 40, HEAP_SIZE - 40)
    assert data["heap"]["free_blocks"] == 1 and data["heap"]["views_agree"] is True
    assert data["events"] == {"alloc": 3, "realloc": 1, "dealloc": 3}
    assert data["heap"]["leaks"] == [] and data["heap"]["peak_used"] == 16 + 18 + 4
    assert data["instructions"] > 0 and data["stop_reason"] == "exit" and data["fault"] is None
    assert data["frames"]["heap_frames"] == 256 and data["paging"]["cr3"].startswith("0x")


def test_oom_demo_panics_with_the_layout(kernel):
    done = aeth("boot", str(kernel), "--cmdline", "demo=oom")
    assert done.returncode == 1
    assert "Heap allocation failed: Layout { size: 2097152, align: 8 (1 << 3) }" in done.stdout
    assert re.search(r"^panicked at kernel_asm/allocator/mod\.s:\d+:5:$", done.stdout, re.M)
