"""The churn workload (`churn=N`, `seed=S`): N allocator calls through the real `__rust_*` entry
points, checked in the guest, traced and checked on the host, and against a reference model.

The model below is written from the workload's description (docs/kernel-conventions.md, "The
churn workload") over the allocator models of tests/support/allocator_model.py: it predicts
every call (kind, size, alignment, returned pointer) and the guest's result line exactly.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import pytest

from emulator import boot
from emulator.layout import HEAP_SIZE, HEAP_START
from tests.support.allocator_model import NODE_ALIGN, NODE_SIZE, BumpModel, LinkedListModel, realloc
from tests.support.paths import KERNEL

pytestmark = pytest.mark.boot

ALLOCATORS = ["linked_list", "bump"]
LINE = re.compile(r"^churn: calls=(\d+) allocs=(\d+) deallocs=(\d+) reallocs=(\d+) zeroed=(\d+) "
                  r"peak_live=(\d+) checksum=(0x[0-9a-f]+)$", re.M)
KIND_OF = {"alloc": "allocs", "alloc_zeroed": "zeroed", "dealloc": "deallocs", "realloc": "reallocs"}

# -- the reference model --------------------------------------------------------------------------

M64 = (1 << 64) - 1
SLOTS, TARGET_LIVE, BUMP_RESERVE = 512, 256, 16384
FNV_BASIS, FNV_PRIME = 0xCBF29CE484222325, 0x100000001B3


def splitmix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def block_size(size: int, align: int) -> int:
    return LinkedListModel.size_align(size, align)[0]


def lowest_bit(x: int) -> int:
    return x & -x


@dataclass
class ChurnModel:
    calls: int
    seed: int
    allocator: str
    slots: list = field(default_factory=lambda: [None] * SLOTS)  # (ptr, size, align) or None
    counts: Counter = field(default_factory=Counter)
    events: list = field(default_factory=list)  # (kind, size, align, result or freed ptr)

    def __post_init__(self) -> None:
        self.state = splitmix64(self.seed) or 1
        self.heap = (BumpModel(HEAP_START, HEAP_START + HEAP_SIZE, HEAP_START, 0) if self.allocator == "bump"
                     else LinkedListModel([(HEAP_START, HEAP_SIZE)]))
        self.made = self.live = self.live_bytes = self.peak = 0
        self.checksum = FNV_BASIS
        self.pending: tuple[int, int] | None = None  # (address, block size) of the block freed last

    def next(self) -> int:
        x = self.state
        x ^= (x << 13) & M64
        x ^= x >> 7
        x ^= (x << 17) & M64
        self.state = x
        return x

    def mix(self, value: int) -> None:
        self.checksum = ((self.checksum ^ value) * FNV_PRIME) & M64

    @staticmethod
    def random_align(r: int) -> int:
        k = (r >> 8) & 63
        return 4096 if k == 0 else 1 << (k % 7)

    def random_layout(self) -> tuple[int, int]:
        r = self.next()
        band, v = r & 63, r >> 16
        size = 1 + v % 64 if band < 45 else 65 + v % 960 if band < 62 else 1025 + v % 7168
        return size, self.random_align(r)

    def limit(self) -> int:
        ptr, block = self.pending
        return max(NODE_ALIGN, min(lowest_bit(ptr), lowest_bit(block)))

    @staticmethod
    def clamp(align: int, limit: int) -> int:
        if align > limit:
            align = 64 if align == 4096 else align
            while align > limit:
                align >>= 1
        return align

    def fit(self, align: int) -> int:
        block = self.pending[1]
        low = 1 if block == NODE_SIZE else block - max(align, NODE_ALIGN) + 1
        return low + self.next() % (block - low + 1)

    def probe(self, r: int, accept) -> int | None:
        return next(((r + k) % SLOTS for k in range(SLOTS) if accept((r + k) % SLOTS)), None)

    def fits(self, i: int) -> bool:
        return self.slots[i] is not None and max(self.slots[i][2], NODE_ALIGN) <= self.limit()

    def counted(self, kind: str, size: int, align: int, ptr: int) -> None:
        self.made += 1
        self.counts[KIND_OF[kind]] += 1
        self.events.append((kind, size, align, ptr))
        self.mix(size)
        if kind != "dealloc":
            assert ptr and ptr % align == 0
            self.mix(ptr - HEAP_START)
        self.peak = max(self.peak, self.live_bytes)

    def alloc(self, i: int, size: int, align: int, zeroed: bool) -> None:
        ptr = self.heap.alloc(size, align)
        self.slots[i] = (ptr, size, align)
        self.live += 1
        self.live_bytes += size
        self.counted("alloc_zeroed" if zeroed else "alloc", size, align, ptr)

    def dealloc(self, i: int) -> tuple[int, int]:
        ptr, size, align = self.slots[i]
        self.heap.dealloc(ptr, size, align)
        self.slots[i] = None
        self.live -= 1
        self.live_bytes -= size
        self.counted("dealloc", size, align, ptr)
        return ptr, block_size(size, align)

    def realloc(self, i: int, new_size: int) -> tuple[int, int]:
        ptr, size, align = self.slots[i]
        new = realloc(self.heap, ptr, size, align, new_size, lambda *_: None)
        self.slots[i] = (new, new_size, align)
        self.live_bytes += new_size - size
        self.counted("realloc", new_size, align, new)
        return ptr, block_size(size, align)

    def run(self) -> str:
        while self.calls - self.made > self.live:
            if self.allocator == "bump" and self.heap.heap_end - self.heap.next < BUMP_RESERVE:
                break
            spare = self.calls - self.made - self.live
            if self.pending is not None:
                if spare == 1:
                    i = self.probe(self.next() % SLOTS, self.fits)
                    self.pending = None if i is None else self.realloc(i, self.fit(self.slots[i][2]))
                    continue
                r = self.next()
                i = self.probe(r % SLOTS, lambda i: self.slots[i] is None or self.fits(i))
                if self.slots[i] is None:
                    align = self.clamp(self.random_align(r), self.limit())
                    size = self.fit(align)
                    self.pending = None
                    self.alloc(i, size, align, (r >> 20) & 3 == 0)
                else:
                    self.pending = self.realloc(i, self.fit(self.slots[i][2]))
            elif self.live < TARGET_LIVE and spare >= 2:
                r = self.next()
                i = self.probe(r % SLOTS, lambda i: self.slots[i] is None)
                size, align = self.random_layout()
                self.alloc(i, size, align, (r >> 20) & 3 == 0)
            elif spare == 1:
                if self.live == 0:
                    break
                i = self.probe(self.next() % SLOTS, lambda i: self.slots[i] is not None)
                self.realloc(i, self.random_layout()[0])
            else:
                self.pending = self.dealloc(self.probe(self.next() % SLOTS, lambda i: self.slots[i] is not None))
        for i in range(SLOTS):
            if self.slots[i] is not None:
                self.dealloc(i)
        c = self.counts
        return (f"churn: calls={self.made} allocs={c['allocs']} deallocs={c['deallocs']} reallocs={c['reallocs']} "
                f"zeroed={c['zeroed']} peak_live={self.peak} checksum=0x{self.checksum:x}")


def model(calls: int, seed: int = 1, allocator: str = "linked_list") -> ChurnModel:
    m = ChurnModel(calls, seed, allocator)
    m.line = m.run()
    return m


def churn_line(serial: str) -> dict[str, int]:
    found = LINE.findall(serial)
    assert len(found) == 1, serial
    names = ("calls", "allocs", "deallocs", "reallocs", "zeroed", "peak_live", "checksum")
    return {name: int(value, 0) for name, value in zip(names, found[0])}


# -- the guest ------------------------------------------------------------------------------------

@pytest.mark.parametrize("allocator", ALLOCATORS)
def test_churn_exits_with_success_and_its_counts_add_up(booted, allocator):
    run = booted(f"churn=2000 allocator={allocator}")
    assert run.exit_code == 0
    lines = run.serial.splitlines()
    assert lines[:2] == ["Aetherion OS", f"cmdline: churn=2000 allocator={allocator}"]
    assert len(lines) == 3 and LINE.match(lines[2])
    line = churn_line(run.serial)
    assert line["calls"] == 2000
    assert line["allocs"] + line["zeroed"] + line["deallocs"] + line["reallocs"] == 2000
    assert line["allocs"] + line["zeroed"] == line["deallocs"]  # every block freed once
    assert min(line["allocs"], line["zeroed"], line["reallocs"]) > 100  # a real mix of calls


@pytest.mark.parametrize("allocator", ALLOCATORS)
def test_churn_line_is_the_models(booted, allocator):
    run = booted(f"churn=2000 allocator={allocator}")
    assert run.serial.splitlines()[-1] == model(2000, 1, allocator).line


@pytest.mark.parametrize("allocator", ALLOCATORS)
def test_traced_events_are_the_calls_the_line_counts(booted, allocator):
    run = booted(f"churn=2000 allocator={allocator}")
    line = churn_line(run.serial)
    assert len(run.events) == 2000 and all(e.returned for e in run.events)
    kinds = Counter(KIND_OF[e.kind] for e in run.events)
    assert kinds == {name: line[name] for name in ("allocs", "zeroed", "deallocs", "reallocs")}
    assert run.violations == ()
    assert run.heap.views_agree is True
    assert run.heap.blocks() == []  # the final frees leave nothing live
    assert run.heap.peak_used == line["peak_live"]
    expected = model(2000, 1, allocator).events
    seen = [(e.kind, e.size, e.align, e.ptr if e.kind == "dealloc" else e.result) for e in run.events]
    assert seen == expected


def test_calls_come_from_distinct_call_sites(booted):
    run = booted("churn=2000 allocator=linked_list")
    sites = Counter((e.kind, e.caller.split("+")[0]) for e in run.events)
    assert set(sites) == {("alloc", "aetherion::churn::alloc_block"),
                          ("alloc_zeroed", "aetherion::churn::alloc_block"),
                          ("realloc", "aetherion::churn::realloc_block"),
                          ("dealloc", "aetherion::churn::dealloc_block"),
                          ("dealloc", "aetherion::churn::run")}  # the final frees
    assert sites[("dealloc", "aetherion::churn::run")] == 256
    assert all("aetherion::churn::run" in " ".join(e.backtrace) for e in run.events)


def test_linked_list_reuses_the_block_freed_last(booted):
    """The design that lets 10^6 calls run on 1 MiB: after the warm-up every allocation is the
    block the call before it freed, so the free list is the heap's tail and at most one block."""
    run = booted("churn=2000 allocator=linked_list")
    events = run.events
    warm_up = 256
    assert [e.kind in ("alloc", "alloc_zeroed") for e in events[:warm_up]] == [True] * warm_up
    final = [i for i, e in enumerate(events) if e.caller.startswith("aetherion::churn::run")]
    churn = range(warm_up, final[0])
    for i in churn:
        e = events[i]
        if e.kind != "dealloc":
            assert e.result == events[i - 1].ptr, e.describe()
    assert max(events[i].heap.free_blocks for i in range(final[0])) == 2


def test_seeds_change_the_checksum_and_the_default_seed_is_1(booted):
    default = booted("churn=2000")
    assert booted("churn=2000 seed=1").serial.splitlines()[-1] == default.serial.splitlines()[-1]
    other = churn_line(booted("churn=2000 seed=2").serial)
    assert other["calls"] == 2000 and other["checksum"] != churn_line(default.serial)["checksum"]


def test_the_same_seed_gives_the_same_line():
    first, second = (boot(KERNEL, cmdline="churn=1500 seed=12345") for _ in range(2))
    assert first.exit_code == second.exit_code == 0
    assert first.serial == second.serial
    assert first.serial.splitlines()[-1] == model(1500, 12345).line


def test_bump_stops_early_when_the_heap_is_nearly_used():
    run = boot(KERNEL, cmdline="churn=10000 allocator=bump")
    assert run.exit_code == 0 and run.violations == ()
    line = churn_line(run.serial)
    expected = model(10000, 1, "bump")
    assert run.serial.splitlines()[-1] == expected.line
    assert 2000 < line["calls"] < 10000 and len(run.events) == line["calls"]
    assert line["allocs"] + line["zeroed"] == line["deallocs"]
    assert HEAP_SIZE - BUMP_RESERVE < run.heap.guest.used <= HEAP_SIZE  # it stopped below 16 KiB free


@pytest.mark.parametrize("calls, kinds", [(0, {}), (1, {}), (2, {"allocs": 1, "deallocs": 1}),
                                          (3, {"allocs": 1, "reallocs": 1, "deallocs": 1})])
def test_tiny_budgets(booted, calls, kinds):
    run = booted(f"churn={calls}")
    assert run.exit_code == 0
    assert Counter(KIND_OF[e.kind] for e in run.events) == kinds
    assert run.serial.splitlines()[-1] == model(calls).line


def test_a_bad_number_is_an_unknown_key(booted):
    run = booted("churn=12x seed=")
    assert "unknown command-line key 'churn=12x' ignored" in run.serial
    assert "unknown command-line key 'seed=' ignored" in run.serial
    assert "churn:" not in run.serial and "vec: [1, 2, 3] len=3" in run.serial  # the demo ran
