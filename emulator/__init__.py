"""aeth-emu: a deterministic x86-64 PC emulator that shows what a kernel's heap allocator does.

What a user's test needs is exported here:

    from emulator import boot
    run = boot("images/kernel.elf", cmdline="allocator=bump")
    assert run.exit_code == 0 and run.heap.views_agree
"""

__version__ = "0.1.0"

# Loaded on first use, so `aeth-emu --version`, `--help` and the toolchain do not import Unicorn.
_EXPORTS = {
    "boot": "emulator.api", "BootRun": "emulator.api",
    "BootConfig": "emulator.machine.records", "RunResult": "emulator.machine.records",
    "StopReason": "emulator.machine.records",
    "AllocEvent": "emulator.trace.events", "HeapState": "emulator.trace.events",
    "Trace": "emulator.trace.format", "read_trace": "emulator.trace.format",
    "Violation": "emulator.heap.checker", "HeapViews": "emulator.heap.views",
    "LiveBlock": "emulator.heap.event_view", "GuestHeapState": "emulator.heap.guest_view",
    "FaultReport": "emulator.machine.faults",
    "EmulatorError": "emulator.errors", "UsageError": "emulator.errors", "ImageError": "emulator.errors",
    "FirmwareError": "emulator.errors", "TraceFormatError": "emulator.errors",
    "CycleModelError": "emulator.errors", "GuestMemoryError": "emulator.errors", "PageFault": "emulator.errors",
    "GuestCallError": "emulator.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'emulator' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
