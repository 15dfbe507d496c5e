"""Errors a user can act on. Each maps to an `aeth-emu` exit code (DESIGN.md §3)."""


class EmulatorError(Exception):
    """Base class: a problem the user can fix; printed as one line, no traceback."""

    exit_code = 2


class UsageError(EmulatorError):
    """A wrong option or argument."""


class ImageError(EmulatorError):
    """A kernel image that cannot be booted: missing, malformed, or outside the memory map."""
