"""`aeth-emu`: the command line's entry point. Serial output goes to stdout as it happens, status to stderr."""

from __future__ import annotations

import sys
from typing import NoReturn

from emulator.cli.parser import build_parser
from emulator.errors import EmulatorError, UsageError


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise UsageError("no command given (try 'aeth-emu boot images/kernel.elf' or 'aeth-emu --help')")
        from emulator.cli.commands import run_command  # imported late: `--help` stays fast

        return run_command(args)
    except EmulatorError as exc:
        print(f"aeth-emu: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("aeth-emu: interrupted", file=sys.stderr)
        return 4


def entry() -> NoReturn:
    sys.exit(main())
