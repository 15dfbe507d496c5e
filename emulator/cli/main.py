"""`aeth-emu`: the command line's entry point. Serial output goes to stdout as it happens, status to stderr."""

from __future__ import annotations

import errno
import gc
import sys
from collections.abc import Callable
from typing import NoReturn

from emulator.cli.parser import build_parser
from emulator.errors import EmulatorError, OutputError, UsageError


def main(argv: list[str] | None = None, imported: Callable[[], None] | None = None) -> int:
    """Run one command; `imported` is called once its modules are imported, before it runs."""
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise UsageError("no command given (try 'aeth-emu boot images/kernel.elf' or 'aeth-emu --help')")
        from emulator.cli.commands import run_command  # imported late: `--help` stays fast

        if imported is not None:
            imported()
        return run_command(args)
    except EmulatorError as exc:
        print(f"aeth-emu: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # writing a command's output to stdout (`stats | head`, `> /dev/full`)
        from emulator.cli.output import EPIPE_EXIT, silence_stdout

        silence_stdout()  # nothing more reaches it, the interpreter's own flush at exit included
        if exc.errno == errno.EPIPE:
            return EPIPE_EXIT
        print(f"aeth-emu: error: cannot write the output: {exc.strerror or exc}", file=sys.stderr)
        return OutputError.exit_code
    except KeyboardInterrupt:
        print("aeth-emu: interrupted", file=sys.stderr)
        return 4


def _started() -> None:
    # What start-up made lives until the process ends: no collection need look at it again.
    gc.freeze()
    gc.enable()


def entry() -> NoReturn:
    # Start-up builds tens of thousands of long-lived objects (the modules) and no garbage cycles worth
    # searching for, and at exit the interpreter would search them all again (together ~20 ms a boot).
    gc.disable()
    code = main(imported=_started)
    gc.freeze()
    sys.exit(code)
