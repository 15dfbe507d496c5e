"""Summaries of a trace: counts, peak, live at exit, size histogram, top call sites."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

from emulator.heap.event_view import EventHeap
from emulator.report.heap import block_json
from emulator.trace.events import KINDS, AllocEvent
from emulator.trace.format import Trace

TOP = 10


def size_bucket(size: int) -> str:
    """Power-of-two buckets: `0`, `1`, `2-3`, `4-7`, …"""
    if size <= 1:
        return str(size)
    low = 1 << (size.bit_length() - 1)
    return f"{low}-{2 * low - 1}"


def summarize(events: tuple[AllocEvent, ...] | list[AllocEvent]) -> dict[str, Any]:
    heap = EventHeap()
    for event in events:
        heap.apply(event)
    by_site_count: Counter[str] = Counter()
    by_site_bytes: Counter[str] = Counter()
    histogram: Counter[int] = Counter()
    for event in events:
        if event.kind in ("alloc", "alloc_zeroed", "realloc"):
            by_site_count[event.caller] += 1
            by_site_bytes[event.caller] += event.size
            histogram[event.size] += 1
    buckets: dict[str, int] = {}
    for size in sorted(histogram):
        key = size_bucket(size)
        buckets[key] = buckets.get(key, 0) + histogram[size]
    return {
        "events": len(events),
        "counts": {kind: heap.counts.get(kind, 0) for kind in KINDS},
        "bytes_requested": heap.bytes_requested,
        "peak_live_bytes": heap.peak_live_bytes,
        "peak_live_blocks": heap.peak_live_blocks,
        "live_at_exit": {"blocks": heap.live_blocks, "bytes": heap.live_bytes},
        "leaks": [block_json(b) for b in heap.blocks()],
        "size_histogram": buckets,
        "top_sites_by_count": [{"site": s, "count": n} for s, n in by_site_count.most_common(TOP)],
        "top_sites_by_bytes": [{"site": s, "bytes": n} for s, n in by_site_bytes.most_common(TOP)],
    }


def summarize_trace(trace: Trace) -> dict[str, Any]:
    summary = summarize(trace.events)
    summary["image"] = trace.header.get("image")
    summary["cmdline"] = trace.header.get("cmdline")
    summary["complete"] = trace.end is not None
    summary["violations"] = len(trace.violations)
    if trace.end is not None:
        summary["stop_reason"] = trace.end.get("stop_reason")
    return summary


def render(summary: dict[str, Any], console: Console) -> None:
    console.print(f"[bold]{summary.get('image')}[/] cmdline={summary.get('cmdline')!r}: "
                  f"{summary['events']} events" + ("" if summary.get("complete", True) else " (trace ends early)"))
    console.print(_two_columns("events by kind", "kind", "count", summary["counts"].items()))
    console.print(f"bytes requested {summary['bytes_requested']}, peak live {summary['peak_live_bytes']} bytes in "
                  f"{summary['peak_live_blocks']} blocks, live at exit {summary['live_at_exit']['bytes']} bytes in "
                  f"{summary['live_at_exit']['blocks']} blocks, violations {summary.get('violations', 0)}")
    console.print(_two_columns("request sizes", "bytes", "allocations", summary["size_histogram"].items()))
    for key, unit in (("top_sites_by_count", "count"), ("top_sites_by_bytes", "bytes")):
        rows = [(row["site"], row[unit]) for row in summary[key]]
        console.print(_two_columns(f"top call sites by {unit}", "call site", unit, rows))


def _two_columns(title: str, label: str, unit: str, rows) -> Table:
    table = Table(title=title)
    table.add_column(label)
    table.add_column(unit, justify="right")
    for name, value in rows:
        table.add_row(str(name), str(value))
    return table
