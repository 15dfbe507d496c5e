"""The machine-code allocators against their reference models (tests/allocator_model.py).

Random sequences of alloc, dealloc and realloc — sizes 1 B to 64 KiB, alignments 1 to 4096 —
run in the emulator through `machine.call`; every returned pointer, the contents a realloc
must keep, and the whole heap state (free list or bump fields, heap_stats) are compared with
the model. `make test` runs 10,000+ operations per allocator; `make fuzz` runs many more and
keeps what fails (shrunk) in tests/fuzz-db, which every later run replays first.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from emulator.heap.guest_view import GuestHeap
from emulator.machine.records import BootConfig
from emulator.machine.session import prepare
from tests.support.allocator_model import BumpModel, LinkedListModel, realloc

pytestmark = [pytest.mark.boot, pytest.mark.slow]

FUZZ = os.environ.get("AETH_FUZZ") == "1"
DATABASE = DirectoryBasedExampleDatabase(os.path.join(os.path.dirname(__file__), "fuzz-db"))
EXAMPLES, STEPS = (300, 1000) if FUZZ else (28, 1000)  # measured: 12,000-16,000 operations per allocator

sizes = st.one_of(st.integers(1, 64), st.integers(65, 4096), st.integers(4097, 65536))
aligns = st.sampled_from([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096])


class AllocatorMachine(RuleBasedStateMachine):
    allocator = "linked_list"
    operations: dict[str, int] = {}  # per allocator, over the whole run: the README's counts come from here

    def _count(self) -> None:
        self.operations[self.allocator] = self.operations.get(self.allocator, 0) + 1

    @initialize()
    def boot(self):
        self.machine = prepare("images/kernel.elf", BootConfig(cmdline=f"allocator={self.allocator} quiet"))
        result = self.machine.run()
        assert result.exit_code == 0
        self.heap = GuestHeap.find(self.machine.image.symbols)
        state = self.heap.read(self.machine.virtual())
        if self.allocator == "bump":
            b = state.bump
            self.model = BumpModel(b["heap_start"], b["heap_end"], b["next"], b["allocations"])
        else:
            self.model = LinkedListModel(list(state.free_list))
        self.live: list[tuple[int, int, int, int]] = []  # (ptr, size, align, fill byte)
        self.fill = 0

    def _write_pattern(self, ptr: int, size: int) -> int:
        self.fill = (self.fill % 251) + 1
        vm = self.machine.virtual()
        self.machine.memory.write(vm.translate(ptr), bytes([self.fill]))
        self.machine.memory.write(vm.translate(ptr + size - 1), bytes([self.fill]))
        return self.fill

    def _check_pattern(self, ptr: int, size: int, fill: int) -> None:
        vm = self.machine.virtual()
        assert vm.read(ptr, 1)[0] == fill and vm.read(ptr + size - 1, 1)[0] == fill

    @rule(size=sizes, align=aligns)
    def alloc(self, size, align):
        self._count()
        got = self.machine.call("__rust_alloc", size, align)
        assert got == self.model.alloc(size, align)
        if got:
            assert got % align == 0
            self.live.append((got, size, align, self._write_pattern(got, size)))

    @precondition(lambda self: self.live)
    @rule(pick=st.integers(0, 1 << 30))
    def dealloc(self, pick):
        self._count()
        ptr, size, align, fill = self.live.pop(pick % len(self.live))
        self._check_pattern(ptr, size, fill)
        self.machine.call("__rust_dealloc", ptr, size, align)
        self.model.dealloc(ptr, size, align)

    @precondition(lambda self: self.live)
    @rule(pick=st.integers(0, 1 << 30), new_size=sizes)
    def realloc(self, pick, new_size):
        self._count()
        index = pick % len(self.live)
        ptr, size, align, fill = self.live[index]
        got = self.machine.call("__rust_realloc", ptr, size, align, new_size)
        assert got == realloc(self.model, ptr, size, align, new_size, lambda *a: None)
        if got:
            kept = min(size, new_size)
            vm = self.machine.virtual()
            assert vm.read(got, 1)[0] == fill  # the first byte moved with the block
            if kept == size:
                assert vm.read(got + size - 1, 1)[0] == fill
            self.live[index] = (got, new_size, align, self._write_pattern(got, new_size))

    @invariant()
    def heap_state_matches(self):
        if not hasattr(self, "model"):
            return
        state = self.heap.read(self.machine.virtual())
        assert state.problems == ()
        if self.allocator == "bump":
            assert (state.bump["next"], state.bump["allocations"]) == (self.model.next, self.model.allocations)
            assert state.used == self.model.used
        else:
            assert list(state.free_list) == self.model.free
            assert state.free == self.model.free_bytes()
        stats = self.machine.call_sret("aetherion::allocator::heap_stats", 24)
        assert int.from_bytes(stats[8:16], "little") == state.used


class BumpMachine(AllocatorMachine):
    allocator = "bump"


common = settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, database=DATABASE,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])

TestLinkedListAgainstModel = AllocatorMachine.TestCase
TestLinkedListAgainstModel.settings = common
TestBumpAgainstModel = BumpMachine.TestCase
TestBumpAgainstModel.settings = common
