"""The Aetherion PC: RAM, ROM, devices and the CPU, from reset to the guest's exit.

The firmware runs in a `UC_MODE_16` Unicorn instance from the reset vector until it jumps to
the kernel's PVH entry; the kernel then runs in a `UC_MODE_64` instance that shares the same
RAM (a 64-bit instance cannot be put into real mode, and a 16-bit instance reads 64-bit
registers as 0, so neither can do the whole boot alone: docs/unicorn-notes.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from unicorn import (
    UC_HOOK_MEM_FETCH_PROT,
    UC_HOOK_MEM_UNMAPPED,
    UC_HOOK_MEM_WRITE_PROT,
    UC_MODE_16,
    UC_MODE_64,
    Uc,
    UcError,
)
from unicorn import x86_const as x86

from emulator.cycles.accounting import CycleAccounting
from emulator.cycles.params import load_params
from emulator.errors import GuestMemoryError
from emulator.guestmem.virtual import VirtualMemory
from emulator.image.loader import KernelImage
from emulator.layout import (
    A20_PORT,
    APIC_BASE,
    APIC_SIZE,
    BOOT_PARAMS,
    COM1,
    COM1_PORTS,
    DEBUG_EXIT_PORT,
    DEBUG_EXIT_PORTS,
    DEBUG_EXIT_SUCCESS,
    POST_PORT,
    RESET_VECTOR,
    ROM_BASE,
)
from emulator.lifetimes import weak_callback
from emulator.machine import cpu, engine
from emulator.machine.bootparams import boot_parameter_block
from emulator.machine.deadlock import describe_deadlock
from emulator.machine.delivery import (
    EXCEPTION_VECTORS,
    NO_VECTOR,
    STOP_DEADLOCK,
    STOP_HOST_RETURN,
    STOP_SYSCALL,
    STOP_UNHANDLED,
    ExceptionDelivery,
    InterruptSource,
)
from emulator.machine.devices.bus import PortBus
from emulator.machine.devices.simple import A20Gate, IsaDebugExit, PostPort
from emulator.machine.devices.uart16550 import LSR, RBR_THR, Uart16550
from emulator.machine.devices.vga import screen_text
from emulator.machine.faults import build_fault_report, exception_name
from emulator.machine.guestcall import CALL_RETURN, call_function
from emulator.machine.interrupts import PcInterrupts
from emulator.machine.physmem import PhysicalMemory
from emulator.machine.ports import NativePorts
from emulator.machine.records import EXIT_CODES, BootConfig, RunResult, Stop, StopReason

MODELS = ("full", "blocks", "off")
NEVER = 1 << 63  # a non-canonical address: emu_start's `until` that no guest can reach
SERIAL_KEEP = 4 << 20  # bytes of serial kept for the report; everything is still streamed


class Machine:
    """One boot of one kernel image. Build, `run()` once, then inspect."""

    def __init__(
        self,
        image: KernelImage,
        firmware: bytes,
        config: BootConfig = BootConfig(),
        on_serial: Callable[[bytes], None] | None = None,
        kernel_instruments: tuple[Callable[[Uc], None], ...] = (),
        model: str = "full",
    ) -> None:
        """`model`: "full" (the cycle model: counts, costs, caches, branches), "blocks" (its block
        hook only: counts and base costs) or "off" (no model hooks at all, for measuring Unicorn
        itself: no instruction count, no limits)."""
        if model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, not {model!r}")
        self.model = model
        engine.collect_closed()
        self.image = image
        self.config = config
        self.memory = PhysicalMemory(config.memory_mib, firmware)
        self._on_serial = on_serial
        self.kernel_instruments = list(kernel_instruments)  # e.g. the tracer: hooks wanted on the kernel's CPU
        self._serial = bytearray()
        self._stop: Stop | None = None
        self._lock = threading.Lock()
        self.bus = PortBus()
        self.uart = Uart16550(COM1, weak_callback(self._serial_out))
        self.post = PostPort()
        self.a20 = A20Gate()
        self.bus.attach(self.uart, COM1, COM1_PORTS)
        self.bus.attach(IsaDebugExit(weak_callback(self._guest_exit)), DEBUG_EXIT_PORT, DEBUG_EXIT_PORTS)
        self.bus.attach(self.post, POST_PORT, 1)
        self.bus.attach(self.a20, A20_PORT, 1)
        self.ports = NativePorts(COM1 + RBR_THR, COM1 + LSR, self.uart.line_status,
                                 weak_callback(self._port_in, dead=0xFFFFFFFF), weak_callback(self._port_out),
                                 weak_callback(self._serial_out))
        self.ports.set_direct(self.uart.plain_transmit)
        self.uc: Uc | None = None  # the instance currently running (or last run)
        self.accounting: CycleAccounting | None = None
        self.firmware_instructions = 0
        self.firmware_accounting: CycleAccounting | None = None
        self.delivery: ExceptionDelivery | None = None  # the current instance's exception hooks
        self.deliveries: list[ExceptionDelivery] = []  # every instance's, for the report
        # device interrupts for the kernel's CPU: the PC's PIC pair and PIT (a test may put its own)
        self.pc_interrupts = PcInterrupts(weak_callback(self._machine_millicycles, dead=0),
                                          round(load_params().clock_ghz * 1e9))
        self.pc_interrupts.attach(self.bus)
        self.interrupt_source: InterruptSource | None = self.pc_interrupts
        self._handoff: dict[str, int] | None = None  # firmware registers at the kernel's entry
        self._handoff_gdtr = None
        self._stop_pc: int | None = None  # where a stop from a hook ended the run (the block runs on)
        self.calling = False  # inside a host call of a guest function (guestcall)
        self.host_call_listeners: list[Callable[[Uc], None]] = []  # told when a host call returns
        self.keep_alive: list[object] = []  # native state whose hooks are on this machine's engines
        self._load_kernel()
        self.memory.write(BOOT_PARAMS, boot_parameter_block(image.entry, self.memory.size, config.cmdline))

    # -- set-up -----------------------------------------------------------------------------

    def _load_kernel(self) -> None:
        for seg in self.image.segments:
            self.memory.write(seg.paddr, seg.data)  # RAM starts zeroed, so .bss needs nothing

    def _new_cpu(self, mode: int) -> Uc:
        uc = engine.new_engine(mode, owner=self)
        self.memory.map_into(uc)
        # Weak callbacks: the engine must not keep the machine alive (emulator/lifetimes.py).
        self.ports.attach(uc)  # in/out: COM1 in C, every other port through _port_in/_port_out
        uc.hook_add(UC_HOOK_MEM_UNMAPPED, weak_callback(self._unmapped_access, dead=False))
        uc.hook_add(UC_HOOK_MEM_WRITE_PROT | UC_HOOK_MEM_FETCH_PROT, weak_callback(self._protected_access, dead=False))
        return uc

    # -- running ----------------------------------------------------------------------------

    def run(self) -> RunResult:
        started = time.monotonic()
        timer = None
        if self.config.timeout is not None:
            timer = threading.Timer(self.config.timeout, weak_callback(self._request_stop), (StopReason.TIMEOUT,
                                    f"the time limit of {self.config.timeout:g} s reached"))
            timer.daemon = True
            timer.start()
        try:
            with self.ports.streaming():
                self._run_firmware()
                if self._stop is None:
                    self._run_kernel()
        except KeyboardInterrupt:
            self._request_stop(StopReason.INTERRUPTED, "interrupted by Ctrl-C")
        finally:
            if timer is not None:
                timer.cancel()
        return self._result(time.monotonic() - started)

    def _account(self, uc: Uc) -> CycleAccounting:
        accounting = CycleAccounting(uc)
        if self.model != "off":
            accounting.attach(memory=self.model == "full")
        return accounting

    def _run_firmware(self) -> None:
        uc = self._new_cpu(UC_MODE_16)
        self.uc = uc
        self.accounting = self._account(uc)
        self._deliver_exceptions(uc, 16)
        if self.config.max_insns is not None:
            self.accounting.set_budget(self.config.max_insns)
        cpu.write(uc, "cs", ROM_BASE >> 4)
        uc.reg_write(x86.UC_X86_REG_IDTR, (0, 0, 0xFFFF, 0))  # the reset state: the IVT at 0 (Unicorn leaves 0, 0)
        self._emulate(uc, RESET_VECTOR, until=self.image.entry)
        self.firmware_instructions = self.accounting.instructions
        self.firmware_accounting = self.accounting
        if self._stop is not None:
            return
        regs = cpu.snapshot_16(uc)
        if regs["eip"] != self.image.entry or not regs["cr0"] & 1:
            self._classify_silent_stop(uc, bits=16)
            return
        self._handoff = regs
        self._handoff_gdtr = uc.reg_read(x86.UC_X86_REG_GDTR)

    def _run_kernel(self) -> None:
        regs = self._handoff
        uc = self._new_cpu(UC_MODE_64)
        # The recipe (docs/unicorn-notes.md) that puts a 64-bit instance into 32-bit protected mode.
        for name, value in (("cr4", 0x20), ("cr0", 0x80000011), ("cr0", 0x11)):
            cpu.write(uc, name, value)
        uc.msr_write(cpu.MSR_EFER, 0)
        cpu.write(uc, "cr4", 0)
        uc.reg_write(x86.UC_X86_REG_GDTR, self._handoff_gdtr)
        cpu.write(uc, "cr0", regs["cr0"])
        for seg in ("cs", "ds", "es", "ss", "fs", "gs"):
            cpu.write(uc, seg, regs[seg])
        for name in cpu.GPRS_32:
            cpu.write(uc, name, regs[name])
        cpu.write(uc, "eflags", regs["eflags"])
        self.uc = uc
        self.accounting = self._account(uc)
        uc.reg_write(x86.UC_X86_REG_IDTR, (0, 0, 0, 0))  # PVH hands over no IDT: until `lidt`, none
        # the local APIC's registers, memory-mapped (reads and writes come to the device model)
        uc.mmio_map(APIC_BASE, APIC_SIZE, weak_callback(self._apic_read, dead=0), None,
                    weak_callback(self._apic_write), None)
        self._deliver_exceptions(uc, 64)
        self.pc_interrupts.kernel_start = self.firmware_accounting.millicycles if self.firmware_accounting else 0
        if self.interrupt_source is not None:
            self.delivery.connect(self.interrupt_source, weak_callback(self._device_failed))
        for instrument in self.kernel_instruments:
            instrument(uc)
        if self.config.max_insns is not None:
            self.accounting.set_budget(max(self.config.max_insns - self.firmware_instructions, 0))
        begin = self.image.entry
        while True:
            self._emulate(uc, begin, until=NEVER)
            if self._stop is not None or not self._halted_until_interrupt(uc):
                break
            begin = cpu.pc(uc)  # `hlt` retired: the interrupt returns after it
        if self._stop is None:
            self._classify_silent_stop(uc, bits=64)

    def _apic_read(self, uc: Uc, offset: int, size: int, user_data) -> int:
        return self.pc_interrupts.apic.read(offset, size)

    def _apic_write(self, uc: Uc, offset: int, size: int, value: int, user_data) -> None:
        if self._stop is not None:
            return
        self.pc_interrupts.apic.write(offset, size, value)
        self.delivery.sync()  # an EOI, a new count, a mask: the line or the next event may change

    def _machine_millicycles(self) -> int:
        """Time since reset on the model's clock: the firmware's, then the kernel's after it."""
        total = self.firmware_accounting.millicycles if self.firmware_accounting else 0
        if self.accounting is not None and self.accounting is not self.firmware_accounting:
            total += self.accounting.millicycles
        return total

    def _halted_until_interrupt(self, uc: Uc) -> bool:
        """emu_start returned at a `hlt` with interrupts on: wait (in model time) for a device."""
        if self._read_code(uc, cpu.pc(uc) - 1, 1, 64) != b"\xf4" or not cpu.read(uc, "rflags") & cpu.RFLAGS_IF:
            return False
        return self.delivery.halt_until_interrupt()

    def _device_failed(self, exc: BaseException) -> None:
        self._request_stop(StopReason.FAULT, f"a device model failed: {exc!r}")

    def _deliver_exceptions(self, uc: Uc, bits: int) -> None:
        self.delivery = ExceptionDelivery(uc, self.accounting, bits, CALL_RETURN)
        self.deliveries.append(self.delivery)

    def _emulate(self, uc: Uc, begin: int, until: int) -> None:
        error = None
        try:
            if self._stop is None:  # emu_start forgets an emu_stop that came before it
                uc.emu_start(begin, until)
        except UcError as exc:
            error = exc
        self._exception_stop(uc)  # what the delivery hooks stopped for comes before Unicorn's own error
        if error is not None and self._stop is None:
            self._fault(uc, None, f"Unicorn stopped: {error}")
        pc = cpu.pc(uc)
        if self._stop is not None and self._stop_pc is not None:
            pc = self._stop_pc  # the rest of the block ran after emu_stop; the guest's run ended here
        self.accounting.finish(pc)
        budget = self.config.max_insns
        if self._stop is None and budget is not None and self.total_instructions >= budget:
            self._request_stop(StopReason.MAX_INSNS, f"the limit of {self.config.max_insns} instructions reached")

    def _exception_stop(self, uc: Uc) -> None:
        """The delivery hooks stopped the CPU: an exception the guest cannot handle, or a triple fault."""
        why, exc = self.delivery.stop()
        if why == STOP_DEADLOCK and self._stop is None:
            report = describe_deadlock(uc, self.memory.read, self.image.symbols, exc.vector, exc.pc,
                                       self.delivery.interrupted() or (0, 0))
            self._stop_pc = exc.pc  # the spinning block did not run as far as the run is concerned
            self._request_stop(StopReason.DEADLOCK, report.summary, deadlock=report)
        if why == STOP_SYSCALL and self._stop is None:
            # Unicorn moves RIP past a syscall once its hooks return; as a fault, it stays on it
            self._stop_pc = exc.pc
            uc.reg_write(x86.UC_X86_REG_RIP, exc.pc)
            if exc.vector == NO_VECTOR:
                self._fault(uc, None, "syscall with EFER.SCE set: entering LSTAR is not modelled by this emulator")
            else:
                self._fault(uc, 6, "invalid opcode (#UD) not handled by the guest", cause="syscall with EFER.SCE clear")
        if why == STOP_UNHANDLED and self._stop is None:
            self._fault(uc, exc.vector, f"{exception_name(exc.vector)} not handled by the guest",
                        at=self._trapping_instruction(uc, exc.vector))
        chain = self.delivery.unfinished()
        if chain and self._stop is None and why != STOP_HOST_RETURN:
            first, later = chain[0], ", ".join(exception_name(e.vector) for e in chain[1:])
            self._fault(uc, first.vector, f"{exception_name(first.vector)}: a triple fault", cr2=first.cr2,
                        at=self._trapping_instruction(uc, first.vector),
                        cause=f"delivering it raised {later or 'a fault'}, and delivering #DF faulted: a triple fault")

    def _classify_silent_stop(self, uc: Uc, bits: int) -> None:
        """emu_start returned by itself: the guest halted, or triple-faulted silently."""
        pc = cpu.read(uc, "eip" if bits == 16 else "rip")
        if bits == 16 and not cpu.read(uc, "cr0") & 1:
            pc += cpu.read(uc, "cs") << 4  # real mode: EIP is an offset into CS
        flags = cpu.read(uc, "eflags" if bits == 16 else "rflags")
        before = self._read_code(uc, pc - 1, 1, bits)
        if before == b"\xf4":
            state = "with interrupts off" if not flags & cpu.RFLAGS_IF else "and no device can interrupt it"
            where = "firmware" if bits == 16 else "kernel"
            self._request_stop(StopReason.HALT, f"the {where} halted {state} at 0x{pc - 1:x}")
        else:
            self._fault(uc, 8, "the guest stopped without a reason Unicorn reports: a triple fault")

    def _read_code(self, uc: Uc, address: int, size: int, bits: int) -> bytes:
        try:
            if bits == 16:
                return bytes(uc.mem_read(address, size))
            return self.virtual(uc).read(address, size)
        except (UcError, GuestMemoryError):
            return b""

    @property
    def total_instructions(self) -> int:
        if self.accounting is None:
            return 0
        if self.uc is not None and cpu.instance_bits(self.uc) == 64:
            return self.firmware_instructions + self.accounting.instructions
        return self.accounting.instructions

    @property
    def serial(self) -> bytes:
        """What the guest has written to COM1 so far, up to SERIAL_KEEP bytes: with what guest
        functions the host called after the run printed (RunResult.serial stops at the run's end)."""
        return bytes(self._serial)

    @property
    def serial_bytes(self) -> int:
        """Bytes the guest wrote to COM1's transmit register (all of them; the report keeps SERIAL_KEEP)."""
        return self.ports.serial_bytes + self.uart.bytes_sent

    @property
    def handoff_registers(self) -> dict[str, int] | None:
        """The firmware's register state at the kernel's PVH entry (None if it never got there)."""
        return None if self._handoff is None else dict(self._handoff)

    def accountings(self) -> list[tuple[CycleAccounting, bool]]:
        """(accounting, is the firmware's) of each CPU instance so far: one until the hand-over."""
        parts = []
        if self.firmware_accounting is not None:
            parts.append((self.firmware_accounting, True))
        if self.accounting is not None and self.accounting is not self.firmware_accounting:
            parts.append((self.accounting, False))
        return parts

    @property
    def total_cycles(self) -> int:
        return sum(accounting.cycles for accounting, _ in self.accountings())

    def virtual(self, uc: Uc | None = None) -> VirtualMemory:
        """Guest virtual memory as the CPU sees it now (through CR3 when paging is on)."""
        return VirtualMemory(self.memory.read, cpu.paging_root(uc or self.uc))

    # -- calling guest functions from the host --------------------------------------------

    def call(self, function: str | int, *args: int, max_insns: int = 50_000_000) -> int:
        """Run a guest function (System V ABI) on the machine as the run left it; returns rax."""
        return call_function(self, function, args, max_insns=max_insns)[0]

    def call_sret(self, function: str | int, size: int, *args: int) -> bytes:
        """Call a function that returns a struct larger than 16 bytes; returns the struct's bytes."""
        return call_function(self, function, args, sret=size)[1]

    @property
    def exited(self) -> bool:
        """The kernel ran and ended with a write to isa-debug-exit: the state host calls run on."""
        return self.uc is not None and cpu.instance_bits(self.uc) == 64 and self._stop is not None \
            and self._stop.reason is StopReason.EXIT

    def run_nested(self, begin: int, until: int, max_insns: int) -> Stop | None:
        """Emulate from `begin` to `until` inside a finished run, then put the run's own stop back.
        Returns why the nested run stopped early (a fault, a limit), or None."""
        uc = self.uc
        saved, stop_pc = self._stop, self._stop_pc
        self._stop, self.calling = None, True
        self.ports.set_stopped(False)
        self.delivery.set_calling(True)
        try:
            with self.ports.streaming():
                uc.emu_start(begin, until, count=max_insns)
        except UcError as exc:
            if self._stop is None:
                self._fault(uc, None, f"Unicorn stopped: {exc}")
        finally:
            self.calling = False
            self.delivery.set_calling(False)
        if self.delivery.stop()[0] == STOP_HOST_RETURN:
            for listener in self.host_call_listeners:
                listener(uc)  # e.g. the tracer: that return address never executes
        else:
            self._exception_stop(uc)
        self.delivery.clear_stop()
        failed, self._stop, self._stop_pc = self._stop, saved, stop_pc
        self.ports.set_stopped(saved is not None)
        return failed

    # -- stops ----------------------------------------------------------------------------

    def _request_stop(self, reason: StopReason, detail: str = "", **info) -> None:
        with self._lock:
            if self._stop is not None:
                return  # the first reason wins; hooks keep firing until the block ends
            self._stop = Stop(reason, detail, **info)
            self.ports.set_stopped(True)
        if self.uc is not None:
            self.uc.emu_stop()

    def interrupt(self, why: str = "interrupted by Ctrl-C") -> None:
        """Stop the guest from another thread (a host signal); safe to call more than once."""
        self._request_stop(StopReason.INTERRUPTED, why)

    def _guest_exit(self, value: int) -> None:
        self._request_stop(StopReason.EXIT, f"guest wrote 0x{value:x} to isa-debug-exit", guest_exit_value=value)

    def _fault(self, uc: Uc, vector: int | None, detail: str, **extra) -> None:
        """Stop with a fault report; `at` names the instruction when RIP is already past it (a trap)."""
        if self._stop is not None:
            return
        report = build_fault_report(uc, self.memory.read, self.image.symbols, vector, detail, **extra)
        self._request_stop(StopReason.FAULT, report.summary, fault=report)

    # -- hooks ----------------------------------------------------------------------------

    def _port_in(self, port: int, size: int) -> int:
        if self._stop is not None:
            return (1 << (8 * size)) - 1
        return self.bus.read(port, size)

    def _port_out(self, port: int, size: int, value: int) -> None:
        if self._stop is not None:
            return  # the block runs on after a stop; its output never happened
        uc = self.uc
        if port == DEBUG_EXIT_PORT:
            # Unicorn runs the rest of the block after emu_stop: the guest's run ends after this `out`.
            pc = cpu.pc(uc)
            opcode = self._read_code(uc, pc, 1, cpu.instance_bits(uc))
            self._stop_pc = pc + (2 if opcode in (b"\xe6", b"\xe7") else 1)  # `out imm8` or `out dx`
        self.bus.write(port, size, value)
        if self.delivery is not None:
            self.delivery.sync()  # a controller or timer register may have changed
        if COM1 <= port < COM1 + COM1_PORTS:
            self.ports.set_direct(self.uart.plain_transmit)  # LCR/MCR decide who serves THR and LSR

    def _trapping_instruction(self, uc: Uc, intno: int) -> int | None:
        """`int n`, `int3`, `into` and `int1` are traps: RIP is already past them, as the CPU
        pushes it. The report names the instruction itself, found from the bytes before RIP."""
        pc = cpu.linear_pc(uc)
        bits = cpu.instance_bits(uc)
        if self._read_code(uc, pc - 2, 2, bits) == bytes([0xCD, intno]):
            return pc - 2
        if self._read_code(uc, pc - 1, 1, bits) == {3: b"\xcc", 4: b"\xce", 1: b"\xf1"}.get(intno):
            return pc - 1
        return None

    def _unmapped_access(self, uc: Uc, access: int, address: int, size: int, value: int, user_data) -> bool:
        self._fault(uc, None, f"access to physical address 0x{address:x}, which no RAM or device backs",
                    access=access, address=address)
        return False

    def _protected_access(self, uc: Uc, access: int, address: int, size: int, value: int, user_data) -> bool:
        self._fault(uc, None, f"write to the BIOS ROM at 0x{address:x}", access=access, address=address)
        return False

    def _serial_out(self, data: bytes) -> None:
        if len(self._serial) < SERIAL_KEEP:
            self._serial += data[: SERIAL_KEEP - len(self._serial)]
        if self._on_serial is not None:
            self._on_serial(data)

    # -- results ----------------------------------------------------------------------------

    def _cycle_breakdown(self) -> dict[str, int]:
        """Firmware and kernel together, so the cycle parts add up to `cycles`."""
        total: dict[str, int] = {}
        for accounting, _ in self.accountings():
            for key, value in accounting.breakdown().items():
                total[key] = total.get(key, 0) + value
        total["halted"] = sum(delivery.halted_cycles for delivery in self.deliveries)  # in `hlt`, waiting
        return total

    def _result(self, wall: float) -> RunResult:
        stop = self._stop or Stop(StopReason.INTERRUPTED, "stopped before the guest ran")
        if stop.reason is StopReason.EXIT:
            exit_code = 0 if stop.guest_exit_value == DEBUG_EXIT_SUCCESS else 1
        else:
            exit_code = EXIT_CODES[stop.reason]
        return RunResult(
            image=self.image.path,
            cmdline=self.config.cmdline,
            stop_reason=stop.reason,
            exit_code=exit_code,
            detail=stop.detail,
            guest_exit_value=stop.guest_exit_value,
            instructions=self.total_instructions,
            firmware_instructions=self.firmware_instructions,
            cycles=self.total_cycles,
            firmware_cycles=self.firmware_accounting.cycles if self.firmware_accounting else 0,
            cycle_breakdown=self._cycle_breakdown(),
            serial=bytes(self._serial),
            post_codes=tuple(self.post.codes),
            fault=stop.fault,
            deadlock=stop.deadlock,
            unknown_ports=dict(self.bus.unknown_ports),
            wall_seconds=wall,
            screen=screen_text(self.memory.read),
            **self._deliveries(),
        )

    def _deliveries(self) -> dict:
        interrupts: dict[int, int] = {}
        recent = []
        for delivery in self.deliveries:
            for vector, count in delivery.delivered().items():
                interrupts[vector] = interrupts.get(vector, 0) + count
            recent += delivery.recent()
        return {"interrupts": interrupts, "recent_exceptions": tuple(recent[-8:]),
                "exceptions_handled": sum(n for v, n in interrupts.items() if v in EXCEPTION_VECTORS)}
