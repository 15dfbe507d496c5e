"""The subcommands behind `aeth-emu`. What only some runs need (reports, trace reading, rich) is
imported where it is used: every boot pays for what it imports."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emulator.api import TracedBoot
from emulator.cli.output import EPIPE_EXIT, SerialStream, refuse_overwriting_input, write_report
from emulator.cli.status import StatusLine
from emulator.errors import ImageError, UsageError
from emulator.image.bundled import bundled_kernel
from emulator.image.loader import load_image
from emulator.layout import MAX_RAM_MIB
from emulator.machine.hostsignals import STOP_SIGNALS, StopOnSignals
from emulator.machine.records import BootConfig, StopReason


def _config(args: argparse.Namespace) -> BootConfig:
    return BootConfig(
        cmdline=None if getattr(args, "no_cmdline", False) else args.cmdline,
        memory_mib=args.memory,
        max_insns=getattr(args, "max_insns", None),
        timeout=getattr(args, "timeout", None),
    )


def _finish_run(boot: TracedBoot, stream: SerialStream):
    with StatusLine(lambda: boot.machine.total_instructions):
        run = boot.run()  # a Ctrl-C ends this with stop reason "interrupted"
    stream.close()
    stream.check()
    result = run.result
    if stream.closed_by_reader:
        return run  # a closed pipe ends the command quietly
    if result.fault is not None:
        print(result.fault.render(), file=sys.stderr)
    if result.deadlock is not None:
        print(result.deadlock.render(), file=sys.stderr)
    for violation in run.violations:
        print(f"aeth-emu: heap check: {violation.message}", file=sys.stderr)
    status = "exit" if result.stop_reason is StopReason.EXIT else "stopped"
    print(f"aeth-emu: {status}: {result.detail}; {result.instructions} instructions, {boot.event_count} allocation "
          f"events, exit code {result.exit_code}", file=sys.stderr)
    return run


def cmd_boot(args: argparse.Namespace) -> int:
    if args.report:
        refuse_overwriting_input(args.report, (args.image,), "the report")
    stream = SerialStream()
    boot = TracedBoot(args.image, _config(args), firmware=args.firmware, check=args.check, on_serial=stream,
                      keep_events=False)
    stream.on_failure = boot.machine.interrupt  # nobody reads the output any more: stop the guest
    with StopOnSignals(boot.machine.interrupt, STOP_SIGNALS, keep_blocked=True):
        code = _boot_outputs(boot, args, stream)
    return EPIPE_EXIT if stream.closed_by_reader else code


def _boot_outputs(boot: TracedBoot, args: argparse.Namespace, stream: SerialStream) -> int:
    run = _finish_run(boot, stream)
    if args.screen:
        print(run.result.screen, file=sys.stderr)
    if args.profile:
        print_profile(boot.machine, run.result)
    if args.dump_pagetables:
        from emulator.report.memory import page_tables

        tables = page_tables(boot.machine)
        if tables is None:
            print("aeth-emu: the guest has paging off: no page tables to dump", file=sys.stderr)
        else:
            print(f"cr3 0x{tables.cr3:x}", file=sys.stderr)
            for region in tables.mappings():
                print(f"  {region.start:016x}-{region.end:016x} {region.end - region.start:016x} {region.perms} "
                      f"{region.page_size >> 10} KiB pages", file=sys.stderr)
    if args.report:
        from emulator.report.run import build_report

        write_report(args.report, build_report(run))
    return run.exit_code


def print_profile(machine, result, top: int = 25) -> None:
    from rich.console import Console
    from rich.table import Table

    from emulator.report.profile import flat_profile

    table = Table(title=f"flat profile: {result.instructions:,} instructions, {result.cycles:,} model cycles")
    for column in ("function", "instructions", "cycles", "% cycles", "cycles/insn"):
        table.add_column(column, justify="left" if column == "function" else "right")
    for name, insns, cycles in flat_profile(machine)[:top]:
        share = 100 * cycles / result.cycles if result.cycles else 0
        table.add_row(name, f"{insns:,}", f"{cycles:,}", f"{share:.1f}", f"{cycles / insns:.2f}" if insns else "")
    console = Console(stderr=True)
    if not console.is_terminal:
        console.width = 160  # full Rust paths in logs and pipes
    console.print(table)


def cmd_trace(args: argparse.Namespace) -> int:
    refuse_overwriting_input(args.output, (args.image,), "the trace")
    stream = SerialStream()
    boot = TracedBoot(args.image, _config(args), firmware=args.firmware, trace_path=args.output,
                      check=not args.no_check, backtrace_depth=args.backtrace_depth, on_serial=stream,
                      keep_events=False)
    stream.on_failure = boot.machine.interrupt
    with StopOnSignals(boot.machine.interrupt, STOP_SIGNALS, keep_blocked=True):
        run = _finish_run(boot, stream)
    if stream.closed_by_reader:
        return EPIPE_EXIT
    print(f"aeth-emu: {boot.event_count} events written to {args.output}", file=sys.stderr)
    return run.exit_code


def cmd_stats(args: argparse.Namespace) -> int:
    from rich.console import Console

    from emulator.report.trace_summary import render, summarize_trace
    from emulator.trace.format import read_trace

    summary = summarize_trace(read_trace(args.trace))
    if args.json:
        import json

        print(json.dumps(summary, indent=2))
    else:
        render(summary, Console())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from emulator.trace.format import read_trace
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
    from rich.console import Console

    from emulator.cli.stepper import CodeView, Stepper
    from emulator.trace.format import read_trace

    source = Path(args.source)
    console = Console()
    stream, is_image = _open_source(source)
    with stream:
        if not is_image:
            trace = read_trace(stream)
    if is_image:
        boot = TracedBoot(source, _config(args), firmware=args.firmware)
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


def cmd_bench(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from emulator.calibrate import bench

    boots = bench.Boots(Path(args.image) if args.image else bundled_kernel(),
                        Path(args.firmware) if args.firmware else None, args.max_insns, args.timeout)
    console = Console(stderr=True)
    steps = [("MIPS workload", lambda: bench.loop_speeds(args.iterations)),
             ("real code", lambda: [bench.real_code(boots, cmdline, bench.qemu_seconds)
                                    for cmdline in bench.REAL_WORKLOADS]),
             ("in-guest benchmarks", lambda: bench.guest_run(boots))]
    results = []
    with StopOnSignals(boots.interrupt, STOP_SIGNALS), \
            Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("bench", total=len(steps))
        for label, step in steps:
            progress.update(task, description=label)
            results.append(step())
            progress.advance(task)
    loop, real, guest = results
    from emulator.cycles.params import load_params
    from emulator.machine.unicorn_build import loaded_build

    report = bench.report(loop, real, guest, load_params().clock_ghz)
    report["unicorn"] = str(loaded_build())
    if args.json:
        import json

        print(json.dumps(report, indent=2))
        return 0
    out = Console()
    if not out.is_terminal:
        out.width = 160  # whole rows in logs and pipes
    out.print(f"CPU: {report['unicorn']}")
    table = Table(title="host speed on a load/add/store loop (same run)")
    for column in ("workload", "instructions", "seconds", "MIPS", "ratio"):
        table.add_column(column, justify="left" if column == "workload" else "right")
    for row in report["host"]:
        table.add_row(row["name"], f"{row['instructions']:,}", f"{row['seconds']:.3f}", f"{row['mips']:.1f}", f"{row['ratio']:.2f}")
    out.print(table)
    table = Table(title="host speed on real code: whole boots of the kernel (same run)")
    for column in ("command line", "configuration", "instructions", "seconds", "MIPS", "÷ raw", "÷ untraced",
                   "events", "µs/event", "trace B/event"):
        table.add_column(column, justify="left" if column in ("command line", "configuration") else "right")
    for row in report["real_code"]:
        traced = row.get("ratio_to_untraced")
        table.add_row(row["workload"], row["variant"], f"{row['instructions']:,}", f"{row['seconds']:.3f}",
                      f"{row['mips']:.1f}", f"{row['ratio_to_raw']:.2f}", "" if traced is None else f"{traced:.2f}",
                      "" if row["events"] is None else f"{row['events']:,}",
                      "" if row.get("us_per_event") is None else f"{row['us_per_event']:.1f}",
                      "" if row.get("trace_bytes_per_event") is None else f"{row['trace_bytes_per_event']:.1f}")
    out.print(table)
    if report["guest"]:
        table = Table(title=f"in-guest benchmarks (guest rdtsc = model cycles; ns at {report['clock_ghz']} GHz)")
        for column in ("operation", "cycles/op", "ns/op", "specification", "ratio"):
            table.add_column(column, justify="left" if column in ("operation", "specification") else "right")
        for row in report["guest"]:
            if "cycles_per_op" in row:
                table.add_row(row["operation"], str(row["cycles_per_op"]), str(row["ns_per_op"]), row["spec"] or "",
                              "" if row["ratio"] is None else f"{row['ratio']:.3f}")
            else:
                measured = f"used {row['used']}, overhead {row['overhead']}, fragmentation {row['fragmentation_percent']:g} %"
                table.add_row(row["operation"], "", "", f"{row['spec']} | measured: {measured}", "")
        out.print(table)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from emulator.calibrate.validate import probes, validate

    image = args.image or bundled_kernel()
    run = probes if args.probes else validate
    try:  # failures are EmulatorErrors: a refused image, missing symbols, a case the sandbox killed
        report = run(image, native_untrusted=args.native_untrusted, time_limit=args.native_time_limit)
    except RuntimeError as exc:  # Unicorn's or the toolchain's
        raise UsageError(str(exc)) from None
    if args.json:
        import json

        print(json.dumps(report, indent=2))
        return 0
    if args.probes:
        table = Table(title="calibration probes: core cycles per loop iteration")
        for column in ("probe", "native", "model"):
            table.add_column(column, justify="left" if column == "probe" else "right")
        for row in report["probes"]:
            table.add_row(row["probe"], f"{row['native_cycles_per_iteration']:.2f}",
                          f"{row['model_cycles_per_iteration']:.2f}")
        Console().print(table)
        return 0
    table = Table(title=f"cycle model vs this CPU (TSC ticks per core cycle {report['ticks_per_core_cycle']:.3f})")
    for column in ("case", "native", "model", "error %", "llvm-mca", "error %"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for row in report["cases"]:
        mca = row["llvm_mca_cycles"]
        table.add_row(row["case"], f"{row['native_cycles']:,}", f"{row['model_cycles']:,}", f"{row['model_error_percent']:+.1f}",
                      "" if mca is None else f"{mca:,}",
                      "" if mca is None else f"{row['llvm_mca_error_percent']:+.1f}")
    out = Console()
    out.print(table)
    for label, key in (("model, all cases", "model"), ("model, llvm-mca's cases", "model_on_llvm_mca_cases"),
                       ("llvm-mca (znver3)", "llvm_mca")):
        summary = report[key]
        out.print(f"{label}: {summary['cases']} cases, MAPE {summary['mape_percent']} %, Kendall tau {summary['kendall_tau']}")
    return 0


COMMANDS = {"boot": cmd_boot, "trace": cmd_trace, "stats": cmd_stats, "export": cmd_export, "step": cmd_step,
            "bench": cmd_bench, "validate": cmd_validate}


def run_command(args: argparse.Namespace) -> int:
    return COMMANDS[args.command](args)
