"""The subcommands behind `aeth-emu`: boot and trace here, the others in trace_commands.py and
host_commands.py, imported when they run. What only some runs need (reports, trace reading, rich)
is imported where it is used: every boot pays for what it imports."""

from __future__ import annotations

import argparse
import sys

from emulator.api import TracedBoot
from emulator.cli.output import EPIPE_EXIT, SerialStream, refuse_overwriting_input, write_report
from emulator.cli.parser import boot_config
from emulator.cli.status import StatusLine
from emulator.machine.hostsignals import STOP_SIGNALS, StopOnSignals
from emulator.machine.records import StopReason


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
    boot = TracedBoot(args.image, boot_config(args), firmware=args.firmware, check=args.check, on_serial=stream,
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
    boot = TracedBoot(args.image, boot_config(args), firmware=args.firmware, trace_path=args.output,
                      check=not args.no_check, backtrace_depth=args.backtrace_depth, on_serial=stream,
                      keep_events=False)
    stream.on_failure = boot.machine.interrupt
    with StopOnSignals(boot.machine.interrupt, STOP_SIGNALS, keep_blocked=True):
        run = _finish_run(boot, stream)
    if stream.closed_by_reader:
        return EPIPE_EXIT
    print(f"aeth-emu: {boot.event_count} events written to {args.output}", file=sys.stderr)
    return run.exit_code


COMMANDS = {"boot": cmd_boot, "trace": cmd_trace}


def run_command(args: argparse.Namespace) -> int:
    command = COMMANDS.get(args.command)
    if command is None and args.command in ("stats", "export", "step"):
        from emulator.cli import trace_commands

        command = getattr(trace_commands, f"cmd_{args.command}")
    elif command is None:
        from emulator.cli import host_commands

        command = getattr(host_commands, f"cmd_{args.command}")
    return command(args)
