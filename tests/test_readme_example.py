"""The README's example heap test, as a user would write it."""

import pytest

from emulator import boot
from emulator.layout import HEAP_START

pytestmark = pytest.mark.boot


def test_bump_heap_after_boot():
    run = boot("images/kernel.elf", cmdline="allocator=bump")
    assert run.exit_code == 0
    assert "Aetherion OS" in run.serial
    assert run.violations == ()
    stats = run.heap.stats()                 # from the guest's own allocator structures
    assert run.heap.views_agree              # ... equal to the kernel's own heap_stats()
    assert stats.used == 40                  # bump: freed blocks are never reused
    assert [e.kind for e in run.events] == ["alloc", "alloc", "realloc", "alloc", "dealloc", "dealloc", "dealloc"]
    ptr = run.call("__rust_alloc", 64, 8)    # call a guest function on the booted machine
    assert ptr == HEAP_START + 40            # bump: the next aligned address
