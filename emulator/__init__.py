"""aeth-emu: a deterministic x86-64 PC emulator that shows what a kernel's heap allocator does."""

__version__ = "0.1.0"

__all__ = ["boot", "BootRun", "__version__"]


def __getattr__(name: str):
    # Lazy, so `aeth-emu --version` and the toolchain do not import Unicorn.
    if name in ("boot", "BootRun"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'emulator' has no attribute {name!r}")
