"""aeth-emu: a deterministic x86-64 PC emulator that shows what a kernel's heap allocator does."""

__version__ = "0.1.0"
