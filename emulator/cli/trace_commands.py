"""`aeth-emu stats`, `export` and `step`: what a trace (or a boot's events) says."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from emulator.api import TracedBoot
from emulator.cli.output import EPIPE_EXIT, refuse_overwriting_input, stdout_console
from emulator.cli.parser import boot_config
from emulator.errors import ImageError, UsageError
from emulator.image.loader import load_image
from emulator.layout import MAX_RAM_MIB
from emulator.machine.hostsignals import STOP_SIGNALS, StopOnSignals
from emulator.machine.records import StopReason
from emulator.trace.format import read_trace


def cmd_stats(args: argparse.Namespace) -> int:

    from emulator.report.trace_summary import render, summarize_trace

    summary = summarize_trace(read_trace(args.trace))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        render(summary, stdout_console())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from emulator.trace.parquet import export, require_pyarrow  # pyarrow is imported only here: start-up stays fast

    refuse_overwriting_input(args.output, (args.trace,), "the Parquet file")
    require_pyarrow()  # before reading what may be a long trace
    try:
        rows = export(read_trace(args.trace), args.output)
    except BrokenPipeError:
        return EPIPE_EXIT  # `export -o /dev/stdout | head`: ended quietly, as the other commands
    print(f"aeth-emu: {rows} events written to {args.output}", file=sys.stderr)
    return 0


ELF_MAGIC = b"\x7fELF"


def _open_source(path: Path):
    """The `step` source opened once (a pipe cannot be read twice), and whether it is an ELF image."""
    try:
        stream = open(path, "rb")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return stream, stream.peek(len(ELF_MAGIC))[: len(ELF_MAGIC)] == ELF_MAGIC


def _trace_image(trace, trace_path: Path):
    """The image a trace names, for disassembly: None if it is gone, changed, or no longer an ELF."""
    named = trace.header.get("image")
    if not named:
        return None
    path = Path(named)
    if not path.is_absolute() and trace_path.is_file():
        path = trace_path.parent / path  # a header's relative path is relative to the trace
    try:
        image = load_image(path, MAX_RAM_MIB << 20)
    except ImageError:
        return None
    return image if image.sha256 == trace.header.get("image_sha256") else None


def cmd_step(args: argparse.Namespace) -> int:

    from emulator.cli.stepper import CodeView, Stepper

    source = Path(args.source)
    console = stdout_console()
    stream, is_image = _open_source(source)
    with stream:
        if not is_image:
            trace = read_trace(stream)
    if is_image:
        boot = TracedBoot(source, boot_config(args), firmware=args.firmware)
        with StopOnSignals(boot.machine.interrupt, STOP_SIGNALS):  # unblocked again for stepping
            run = boot.run()
        if run.result.stop_reason is not StopReason.EXIT:
            print(f"aeth-emu: stopped: {run.result.detail}; stepping through the {len(run.events)} events "
                  f"before it", file=sys.stderr)
        events, image, code, heap_at = run.events, boot.machine.image, run.exit_code, run.heap_at
    else:
        events, image, code, heap_at = trace.events, _trace_image(trace, source), 0, trace.heap_at
    view = None
    if image is not None:
        view = CodeView([(seg.vaddr, seg.data) for seg in image.segments if "x" in seg.flags], image.symbols)
    stepper = Stepper(events, console, view, heap_at=heap_at)
    interactive = sys.stdin.isatty()
    prompt = (lambda: console.print("[dim](n)ext (p)rev (c)ontinue EXPR (g)o N (q)uit[/]", end=" ")) if interactive else None
    stepper.run((line.rstrip("\n") for line in sys.stdin), prompt)
    return code  # a booted image's own exit code, as `boot` gives it
