"""The subcommands behind `aeth-emu`."""

from __future__ import annotations

import argparse
import sys

from .machine import BootConfig, StopReason
from .report import build_report, write_report
from .session import prepare
from .status import StatusLine


class _SerialStream:
    """Serial bytes to stdout as they come; flushed per line so a pipe sees them live."""

    def __init__(self) -> None:
        self._out = sys.stdout.buffer

    def __call__(self, data: bytes) -> None:
        self._out.write(data)
        if b"\n" in data:
            self._out.flush()

    def close(self) -> None:
        self._out.flush()


def _config(args: argparse.Namespace) -> BootConfig:
    return BootConfig(
        cmdline=None if args.no_cmdline else args.cmdline,
        memory_mib=args.memory,
        max_insns=args.max_insns,
        timeout=args.timeout,
    )


def cmd_boot(args: argparse.Namespace) -> int:
    stream = _SerialStream()
    machine = prepare(args.image, _config(args), firmware=args.firmware, on_serial=stream)
    with StatusLine(lambda: machine.total_instructions):
        result = machine.run()
    stream.close()
    if result.fault is not None:
        print(result.fault.render(), file=sys.stderr)
    if args.screen:
        print(result.screen, file=sys.stderr)
    status = "exit" if result.stop_reason is StopReason.EXIT else "stopped"
    print(f"aeth-emu: {status}: {result.detail}; {result.instructions} instructions, exit code {result.exit_code}",
          file=sys.stderr)
    if args.report:
        write_report(args.report, build_report(result, machine.image.sha256))
    return result.exit_code


COMMANDS = {"boot": cmd_boot}


def run_command(args: argparse.Namespace) -> int:
    return COMMANDS[args.command](args)
