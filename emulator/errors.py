"""Every error a user can cause or meet: one hierarchy, one-line messages, one exit code each.

The command line prints `aeth-emu: error: MESSAGE` and exits with the class's `exit_code`;
the Python API raises the same classes (exported from `emulator`). Messages describe the
problem, not a command-line flag, so they read right from both.
"""


class EmulatorError(Exception):
    """Base class: a problem the user can act on; printed as one line, no traceback."""

    exit_code = 2


class UsageError(EmulatorError):
    """A wrong option, argument or configuration value."""


class ImageError(EmulatorError):
    """A kernel image that cannot be booted: missing, malformed, or outside the memory map."""


class FirmwareError(EmulatorError):
    """A BIOS ROM that is missing or not a 64 KiB image."""


class TraceFormatError(EmulatorError):
    """A trace file that cannot be read: not a trace, a version this build does not read, a bad record."""


class NativeError(EmulatorError):
    """A native part of aeth-emu (a C extension) is not built, out of date, or refused by Unicorn."""


class CycleModelError(NativeError):
    """The native cycle model is missing, out of date, or its parameter file is malformed."""


class GuestMemoryError(EmulatorError):
    """A host-side read or write of guest memory that no RAM or mapping backs."""


class PageFault(GuestMemoryError):
    """A virtual address the guest's page tables do not map."""


class GuestCallError(EmulatorError):
    """A guest function called from the host did not return: it faulted, ran away, or the
    machine was not in a state to call it (the run did not end with a normal exit)."""

    def __init__(self, message: str, fault=None) -> None:
        super().__init__(message)
        self.fault = fault  # the FaultReport when the function faulted


class GuestStopped(EmulatorError):
    """A command that needs a guest to boot and exit with success found it stopped otherwise
    (a failure, a fault, a limit); the exit code is that stop's own."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class OutputError(EmulatorError):
    """A file or stream the user named could not be written (a full disk, a closed device)."""

    exit_code = 5
