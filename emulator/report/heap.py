"""The heap section of a run report, and the one JSON form of a live block."""

from __future__ import annotations

from typing import Any

from emulator.heap.event_view import LiveBlock
from emulator.heap.views import HeapViews


def block_json(block: LiveBlock) -> dict[str, Any]:
    return {"ptr": f"0x{block.ptr:x}", "size": block.size, "align": block.align, "seq": block.seq,
            "caller": block.caller}


def heap_section(views: HeapViews, any_events: bool) -> dict[str, Any] | None:
    guest = views.guest
    if guest is None and not any_events:
        return None
    return {
        "allocator": guest.allocator if guest else None,
        "heap_size": guest.heap_size if guest else None,
        "used": guest.used if guest else None,
        "free": guest.free if guest else None,
        "free_blocks": guest.free_blocks if guest else None,
        "peak_used": views.peak_used,
        "leaks": [block_json(b) for b in views.blocks()],
        "views_agree": views.views_agree,
    }
