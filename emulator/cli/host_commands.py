"""`aeth-emu bench` and `validate`: this host's speed, and the cycle model against this host's CPU."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from emulator.cli.output import stdout_console
from emulator.errors import UsageError
from emulator.image.bundled import bundled_kernel
from emulator.machine.hostsignals import STOP_SIGNALS, StopOnSignals


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
        print(json.dumps(report, indent=2))
        return 0
    out = stdout_console()
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
                   "÷ QEMU", "events", "µs/event", "trace B/event"):
        table.add_column(column, justify="left" if column in ("command line", "configuration") else "right")
    for row in report["real_code"]:
        traced, qemu = row.get("ratio_to_untraced"), row.get("ratio_to_qemu")
        table.add_row(row["workload"] or "(none)", row["variant"], f"{row['instructions']:,}", f"{row['seconds']:.3f}",
                      f"{row['mips']:.1f}", f"{row['ratio_to_raw']:.2f}", "" if traced is None else f"{traced:.2f}",
                      "" if qemu is None else f"{qemu:.2f}",
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
    from rich.table import Table

    from emulator.calibrate.validate import probes, validate

    image = args.image or bundled_kernel()
    run = probes if args.probes else validate
    try:  # failures are EmulatorErrors: a refused image, missing symbols, a case the sandbox killed
        report = run(image, native_untrusted=args.native_untrusted, time_limit=args.native_time_limit)
    except RuntimeError as exc:  # Unicorn's or the toolchain's
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    if args.probes:
        table = Table(title="calibration probes: core cycles per loop iteration")
        for column in ("probe", "native", "model"):
            table.add_column(column, justify="left" if column == "probe" else "right")
        for row in report["probes"]:
            table.add_row(row["probe"], f"{row['native_cycles_per_iteration']:.2f}",
                          f"{row['model_cycles_per_iteration']:.2f}")
        stdout_console().print(table)
        return 0
    table = Table(title=f"cycle model vs this CPU (TSC ticks per core cycle {report['ticks_per_core_cycle']:.3f})")
    for column in ("case", "native", "model", "error %", "llvm-mca", "error %"):
        table.add_column(column, justify="left" if column == "case" else "right")
    for row in report["cases"]:
        mca = row["llvm_mca_cycles"]
        table.add_row(row["case"], f"{row['native_cycles']:,}", f"{row['model_cycles']:,}", f"{row['model_error_percent']:+.1f}",
                      "" if mca is None else f"{mca:,}",
                      "" if mca is None else f"{row['llvm_mca_error_percent']:+.1f}")
    out = stdout_console()
    out.print(table)
    for label, key in (("model, all cases", "model"), ("model, llvm-mca's cases", "model_on_llvm_mca_cases"),
                       ("llvm-mca (znver3)", "llvm_mca")):
        summary = report[key]
        out.print(f"{label}: {summary['cases']} cases, MAPE {summary['mape_percent']} %, Kendall tau {summary['kendall_tau']}")
    return 0
