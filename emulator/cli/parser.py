"""`aeth-emu`'s argument parser: every command, option and default."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from emulator import __version__
from emulator.errors import UsageError
from emulator.layout import DEFAULT_RAM_MIB

if TYPE_CHECKING:
    from emulator.machine.records import BootConfig


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2; `late` adds the options
    the first time this parser is used."""

    def __init__(self, *args, late: Callable[[argparse.ArgumentParser], None] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._late = late

    def _complete(self) -> None:
        if self._late is not None:
            late, self._late = self._late, None
            late(self)

    def parse_known_args(self, args=None, namespace=None):
        self._complete()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._complete()
        return super().format_usage()

    def format_help(self) -> str:
        self._complete()
        return super().format_help()

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def boot_config(args: argparse.Namespace) -> BootConfig:
    """The machine configuration the run options ask for."""
    from emulator.machine.records import BootConfig  # the machine's modules: not for `--help`

    return BootConfig(
        cmdline=None if getattr(args, "no_cmdline", False) else args.cmdline,
        memory_mib=args.memory,
        max_insns=getattr(args, "max_insns", None),
        timeout=getattr(args, "timeout", None),
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _add_firmware_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--firmware", metavar="ROM", help="BIOS ROM image, 64 KiB (default: the one shipped with aeth-emu)")


def _add_boot_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="kernel image: a PVH ELF64 (e.g. images/kernel.elf)")
    _add_run_options(p)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """What every command that runs a guest takes: the same limits everywhere."""
    p.add_argument("--cmdline", default="", help="kernel command line (default: empty)")
    p.add_argument("--no-cmdline", action="store_true", help="boot with no command line at all (cmdline_paddr 0)")
    p.add_argument("--memory", type=_positive_int, default=DEFAULT_RAM_MIB, metavar="MIB",
                   help=f"RAM size in MiB (default {DEFAULT_RAM_MIB}, at least 64)")
    _add_limit_options(p, "the guest")
    _add_firmware_option(p)


def _add_limit_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--max-insns", type=_positive_int, metavar="N", help=f"stop {what} after N instructions (exit 4)")
    p.add_argument("--timeout", type=_positive_float, metavar="S", help=f"stop {what} after S seconds of host time (exit 4)")


def build_parser() -> argparse.ArgumentParser:
    """Each command's options are added when that command is parsed (or its help shown): a boot
    does not build the other six."""
    parser = _Parser(prog="aeth-emu", description="Deterministic x86-64 PC emulator that shows what a kernel's heap allocator does.")
    parser.add_argument("--version", action="version", version=f"aeth-emu {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.add_parser("boot", help="boot a kernel image; serial output to stdout", late=_boot)
    sub.add_parser("trace", help="boot and write every allocation event to a JSON Lines trace", late=_trace)
    sub.add_parser("stats", help="summarize a trace: counts, peak, live at exit, sizes, call sites", late=_stats)
    sub.add_parser("export", help="write a trace as an Apache Parquet file, one row per event "
                                  "(for pandas, polars, DuckDB; needs pyarrow)", late=_export)
    sub.add_parser("step", help="step through a boot's allocations (an image, or a trace file)", late=_step)
    sub.add_parser("bench", help="host speed ratios and the kernel's in-guest benchmarks, in one run", late=_bench)
    sub.add_parser("validate", help="compare the cycle model with this host CPU running the same code", late=_validate)
    return parser


def _boot(boot: argparse.ArgumentParser) -> None:
    _add_boot_options(boot)
    boot.add_argument("--report", metavar="FILE", help="write a JSON report of the run")
    boot.add_argument("--screen", action="store_true", help="print the VGA text screen after the run (to stderr)")
    boot.add_argument("--check", action="store_true", help="check heap invariants at every allocation event")
    boot.add_argument("--profile", action="store_true", help="print a flat profile: functions by model cycles (to stderr)")
    boot.add_argument("--dump-pagetables", action="store_true", help="print the guest's page-table mappings after the run (to stderr)")


def _trace(trace: argparse.ArgumentParser) -> None:
    _add_boot_options(trace)
    trace.add_argument("-o", "--output", required=True, metavar="FILE", help="trace file to write (JSON Lines)")
    trace.add_argument("--no-check", action="store_true", help="do not check heap invariants per event")
    trace.add_argument("--backtrace-depth", type=_positive_int, default=8, metavar="N", help="frames per event (default 8)")


def _stats(stats: argparse.ArgumentParser) -> None:
    stats.add_argument("trace", help="trace file written by 'aeth-emu trace'")
    stats.add_argument("--json", action="store_true", help="print the summary as JSON")


def _export(export: argparse.ArgumentParser) -> None:
    export.add_argument("trace", help="trace file written by 'aeth-emu trace'")
    export.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="Parquet file to write (a regular file is replaced atomically)")


def _step(step: argparse.ArgumentParser) -> None:
    step.add_argument("source", help="kernel image to boot, or a trace file (.jsonl)")
    _add_run_options(step)


def _bench(bench: argparse.ArgumentParser) -> None:
    bench.add_argument("image", nargs="?", help="kernel image (default: the kernel shipped with aeth-emu)")
    bench.add_argument("--json", action="store_true", help="print the results as JSON")
    _add_firmware_option(bench)
    _add_limit_options(bench, "each boot")
    bench.add_argument("--iterations", type=_positive_int, default=3_000_000, metavar="N", help="loop iterations for the MIPS workload")


def _validate(validate: argparse.ArgumentParser) -> None:
    from emulator.calibrate.sandbox import DEFAULT_TIME_LIMIT  # the sandbox's module: only for `validate`

    validate.add_argument("image", nargs="?",
                          help="kernel image whose allocators are measured (default: the kernel shipped with aeth-emu)")
    validate.add_argument("--json", action="store_true", help="print the results as JSON")
    validate.add_argument("--probes", action="store_true",
                          help="run the calibration probes behind cycle_model.toml's measured figures instead")
    validate.add_argument("--native-untrusted", action="store_true",
                          help="run an image other than the shipped kernel natively too (in a sandboxed child: "
                               "no system call but read, write and exit)")
    validate.add_argument("--native-time-limit", type=_positive_float, default=DEFAULT_TIME_LIMIT, metavar="SECONDS",
                          help=f"kill the native run past this many seconds (default {DEFAULT_TIME_LIMIT:g})")
