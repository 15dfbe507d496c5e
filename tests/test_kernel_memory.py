"""Phases 1.1/1.2 seen from the host: the guest's page tables and frame pool after boot."""

from __future__ import annotations

import re

import pytest

from emulator import boot
from emulator.errors import GuestCallError
from emulator.guestmem.frames import mapped_frames, page_table_frames, read_frame_pool
from emulator.layout import FRAME_POOL_END, FRAME_POOL_START, HEAP_SIZE, HEAP_START
from emulator.report.memory import frames_section, page_tables, paging_section

pytestmark = pytest.mark.boot


@pytest.fixture(scope="module")
def run(booted):
    return booted("")


def test_heap_is_256_distinct_pool_frames(run):
    tables = page_tables(run.machine)
    frames = mapped_frames(tables, HEAP_START, HEAP_SIZE)
    assert len(frames) == 256 and None not in frames
    assert len(set(frames)) == 256
    assert all(FRAME_POOL_START <= f < FRAME_POOL_END for f in frames)
    heap = tables.translate(HEAP_START)
    assert heap.perms == "rw-" and heap.page_size == 4096


def test_guard_pages_and_page_zero_are_not_present(run):
    tables = page_tables(run.machine)
    for va in (0, 0xFFF, HEAP_START - 1, HEAP_START - 4096, HEAP_START + HEAP_SIZE):
        failure = tables.walk(va)
        assert not hasattr(failure, "phys"), hex(va)
        assert failure.reason == "not present (P=0)"
    assert tables.walk(HEAP_START - 1).level == "PT"


def test_every_table_and_heap_frame_is_marked_used(run):
    machine = run.machine
    tables = page_tables(machine)
    pool = read_frame_pool(machine.memory.read, run.symbols.address("aetherion::memory::frame::FRAME_ALLOCATOR"))
    tables_used = page_table_frames(tables)
    heap = set(mapped_frames(tables, HEAP_START, HEAP_SIZE))
    assert tables_used <= pool.used_frames and heap <= pool.used_frames
    assert pool.used_frames == tables_used | heap  # nothing else holds a frame after the demo
    assert pool.total == 8192 and pool.free + pool.used == pool.total
    assert frames_section(machine) == {"total": 8192, "free": 8192 - len(pool.used_frames), "used": len(pool.used_frames),
                                       "page_table_frames": len(tables_used), "heap_frames": 256}


def test_kernel_sections_have_w_xor_x(run):
    tables = page_tables(run.machine)
    symbols = run.symbols
    assert tables.translate(symbols.address("aetherion::kmain")).perms == "r-x"
    assert tables.translate(symbols.address("__rodata_start")).perms == "r--"
    assert tables.translate(symbols.address("aetherion::config::CONFIG")).perms == "rw-"
    regions = paging_section(run.machine)["regions"]
    assert not any(r["perms"] == "rwx" for r in regions)
    assert regions[0]["start"] == "0x1000"  # page 0 unmapped


def test_host_walker_agrees_with_the_guests_translate(booted):
    run = booted("test=memory verbose")
    assert run.exit_code == 0
    lines = re.findall(r"^translate (0x[0-9a-f]+) -> (0x[0-9a-f]+|none)$", run.serial, re.M)
    assert len(lines) == 12
    tables = page_tables(run.machine)
    for va, pa in lines:
        host = tables.translate(int(va, 16))
        assert (None if host is None else hex(host.phys)) == (None if pa == "none" else pa), va


ADD_FREE_REGION = "aetherion::allocator::linked_list::LinkedListAllocator::add_free_region"


def _write_below_the_heap(run):
    """LinkedListAllocator::add_free_region(self, addr, size) writes a node at addr: the guard page."""
    with pytest.raises(GuestCallError) as err:
        run.call(ADD_FREE_REGION, run.symbols.address("aetherion::allocator::ALLOCATOR") + 16, HEAP_START - 16, 16)
    return err.value


def test_write_to_heap_guard_page_meets_the_kernels_page_fault_handler(kernel):
    """Our kernel has an IDT: its #PF handler reports the write and panics (a fresh boot: the
    handler allocates, which a shared boot's later tests would see)."""
    run = boot(kernel)
    error = _write_below_the_heap(run)
    assert "did not return: guest wrote 0x11 to isa-debug-exit" in str(error) and error.fault is None
    report = run.machine.serial.decode().split("EXCEPTION: PAGE FAULT\n")[1]
    assert report.startswith(f"Accessed Address: {HEAP_START - 16:#x}\nError Code: 0x2 (not present | write | supervisor)\n")
    rip = int(report.split("instruction_pointer: ")[1].split(",")[0], 16)
    assert run.symbols.describe(rip).startswith(ADD_FREE_REGION + "+")


def test_write_to_heap_guard_page_without_an_idt_is_a_fault_naming_it(kernel):
    """The same write with the IDT gone (IDTR limit 0, as a kernel that never ran lidt): the
    host's fault report names the guard page."""
    from unicorn.x86_const import UC_X86_REG_IDTR

    run = boot(kernel)
    run.machine.uc.reg_write(UC_X86_REG_IDTR, (0, 0, 0, 0))
    fault = _write_below_the_heap(run).fault
    assert fault.exception == "#PF" and fault.cr2 == HEAP_START - 16
    assert f"write of {HEAP_START - 0x10:#x}" in fault.summary
    assert "PT entry 63" in fault.page_walk and "not present" in fault.page_walk
    assert "heap guard page" in fault.summary
    assert fault.location.startswith(ADD_FREE_REGION + "+")
