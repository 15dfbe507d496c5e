"""Exceptions delivered through the guest's IDT: the native hooks of native/delivery.c, set up on
each CPU instance, and what they saw, read after a run.

The hooks deliver every exception the guest can handle with QEMU's own delivery code (exported by
libunicorn), so nothing runs in Python per exception. They stop the CPU when the guest cannot
handle one (no gate for it, nor for #NP, #GP or #DF), when a function called from the host
returns, and QEMU stops it on a triple fault; the machine turns those into its stops.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from unicorn import UC_HOOK_BLOCK, UC_HOOK_INSN, UC_HOOK_INSN_INVALID, UC_HOOK_INTR, Uc
from unicorn import x86_const as x86

from emulator.cycles.accounting import CycleAccounting
from emulator.cycles.native import OUT_OF_DATE, add_native_hook, bind, extension, uc_function
from emulator.errors import NativeError

STOP_NONE, STOP_HOST_RETURN, STOP_UNHANDLED, STOP_SYSCALL, STOP_DEADLOCK = range(5)
NO_VECTOR = (1 << 64) - 1  # a stop that is not an exception (syscall with EFER.SCE set)
EXCEPTION_VECTORS = range(32)  # the CPU's own; the rest are `int n` and device interrupts
_FIND_ENV = (0x6165_7468_2D65_6E76, 0x7265_6773_2D72_6378)  # written to RAX and RCX to find the CPU state
_ENV_SPAN = 1 << 20  # bytes of the CPU object searched for them


DEVICE_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint64)
MSR_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint32, ctypes.c_int, ctypes.POINTER(ctypes.c_uint64))
NEVER = (1 << 64) - 1


class InterruptSource(Protocol):
    """The machine's interrupt controller as the CPU sees it (the PIC pair and its timers)."""

    def catch_up(self, now: int) -> None:
        """The clock (millicycles) reached `now`: timers that came due raise their lines."""

    def asserted(self) -> bool:
        """The controller's INTR output: an interrupt waits for the CPU."""

    def acknowledge(self) -> int:
        """The CPU takes the interrupt: its vector (-1: none after all)."""

    def next_event(self) -> int | None:
        """When (millicycles) a timer next raises a line, or None."""

    # optional: `read_msr(msr) -> int | None` and `write_msr(msr, value) -> bool` for the MSRs the
    # devices own (None / False: not theirs)


class Handler_(ctypes.Structure):  # dl_handler
    _fields_ = [(name, ctypes.c_uint64) for name in ("vector", "rip", "rsp", "rbp")]


class Exception_(ctypes.Structure):  # dl_exception
    _fields_ = [(name, ctypes.c_uint64) for name in ("vector", "pc", "cr2", "insns")]


@dataclass(frozen=True)
class Handled:
    vector: int
    pc: int  # the faulting instruction, or the one after a trap (`int n`, `int3`): what was pushed
    cr2: int  # for a page fault: the address
    instructions: int  # retired by this CPU instance before it


def _lib() -> ctypes.CDLL:
    lib = extension()
    p, u64, i, size = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_size_t
    pe = ctypes.POINTER(Exception_)
    sigs = {"dl_size": (size, []), "dl_exception_size": (size, []),
            "dl_init": (None, [p, p, p, p, p, p, p, p, p, i, u64]), "dl_find_env": (i, [p, u64, u64, size]), "dl_attach": (i, [p, p]),
            "dl_stop": (i, [p, pe]), "dl_delivering": (i, [p, pe, i]), "dl_delivered": (ctypes.POINTER(u64), [p]),
            "dl_recent": (i, [p, pe]), "dl_set_calling": (None, [p, i]),
            "dl_clear_stop": (None, [p]), "dl_hook_intr": (p, []), "dl_hook_invalid": (p, []),
            "dl_hook_syscall": (p, []), "cm_instructions": (u64, [p]), "dl_set_devices": (None, [p, p, DEVICE_CB, DEVICE_CB]),
            "dl_set_next_event": (None, [p, u64]), "dl_set_irq_line": (None, [p, i]), "dl_check_now": (None, [p]),
            "dl_hook_block": (p, []), "cm_idle": (None, [p, u64]),
            "cm_halted_mc": (u64, [p]), "cm_millicycles": (u64, [p]),
            "dl_innermost": (i, [p, ctypes.POINTER(Handler_)]), "dl_set_cpuid": (None, [p, p]),
            "dl_hook_cpuid": (p, []), "dl_set_msr": (None, [p, MSR_CB]), "dl_hook_rdmsr": (p, []),
            "dl_hook_wrmsr": (p, [])}
    bind(lib, sigs)
    if lib.dl_exception_size() != ctypes.sizeof(Exception_):
        raise NativeError(OUT_OF_DATE)
    return lib


class ExceptionDelivery:
    """The delivery hooks of one CPU instance. Install after its cycle accounting (the model's own
    exception hook must see an exception before it is delivered)."""

    def __init__(self, uc: Uc, accounting: CycleAccounting, bits: int, call_return: int) -> None:
        lib = self._lib = _lib()
        self._state = ctypes.create_string_buffer(lib.dl_size())
        self._keep = accounting  # the model the hooks tell about exceptions lives as long as they do
        self._source: InterruptSource | None = None
        self.msr_hooks = False  # RDMSR/WRMSR reach the devices (a patched libunicorn, 64-bit)
        lib.dl_init(self._state, accounting.native_state, uc_function("uc_reg_read"), uc_function("uc_vmem_read"),
                    uc_function("uc_emu_stop"), uc_function("qemu_get_cpu_x86_64"),
                    uc_function("x86_cpu_do_interrupt_x86_64"), uc_function("raise_exception_x86_64"),
                    ctypes.cast(lib.cm_instructions, ctypes.c_void_p).value, bits, call_return)
        if lib.dl_attach(self._state, uc._uch):
            raise NativeError("cannot find the CPU in this libunicorn (exception delivery needs it)")
        if bits == 64:
            self._find_env(uc)
        self._hook(uc, UC_HOOK_INTR, lib.dl_hook_intr())
        self._hook(uc, UC_HOOK_INSN_INVALID, lib.dl_hook_invalid())
        if bits == 64:
            self._hook(uc, UC_HOOK_INSN, lib.dl_hook_syscall(), x86.UC_X86_INS_SYSCALL)
            # between blocks: handlers returning (which handler an allocator call runs under), and
            # device interrupts once a source is connected
            self._hook(uc, UC_HOOK_BLOCK, lib.dl_hook_block())
            # CPUID says what is modelled: an xAPIC, no x2APIC, the TSC-deadline timer if its MSR reaches the APIC
            lib.dl_set_cpuid(self._state, uc_function("cpu_x86_cpuid_x86_64"))
            self._hook(uc, UC_HOOK_INSN, lib.dl_hook_cpuid(), x86.UC_X86_INS_CPUID)
            self.msr_hooks = self._msr_hooks(uc)

    def _msr_hooks(self, uc: Uc) -> bool:
        """RDMSR/WRMSR hooks, for the device MSRs: only a libunicorn with patch 0006 accepts them."""
        try:
            self._hook(uc, UC_HOOK_INSN, self._lib.dl_hook_rdmsr(), x86.UC_X86_INS_RDMSR)
        except NativeError:
            return False  # the stock wheel: no TSC-deadline timer, and CPUID says so
        self._hook(uc, UC_HOOK_INSN, self._lib.dl_hook_wrmsr(), x86.UC_X86_INS_WRMSR)
        return True

    def connect(self, source: InterruptSource, fail: Callable[[BaseException], None]) -> None:
        """Take device interrupts from `source` at block boundaries (64-bit instances only).
        `fail` is told of an exception raised by the source inside a hook (it cannot unwind there)."""
        self._source, self._fail = source, fail

        def on_time(now: int) -> int:
            try:
                source.catch_up(now)
                self.sync()
            except BaseException as exc:  # noqa: BLE001 - handed to fail(), which stops the guest
                fail(exc)
            return 0

        def acknowledge(_: int) -> int:
            try:
                vector = source.acknowledge()
                self.sync()
                return vector
            except BaseException as exc:  # noqa: BLE001 - as above
                fail(exc)
                return -1

        def on_msr(msr: int, write: int, value) -> int:
            try:
                if write:
                    owned = source.write_msr(msr, value[0])
                    if owned:
                        self.sync()  # a deadline armed or disarmed
                    return int(owned)
                read = source.read_msr(msr)
                if read is None:
                    return 0
                value[0] = read
                return 1
            except BaseException as exc:  # noqa: BLE001 - as above
                fail(exc)
                return 0

        self._callbacks = (DEVICE_CB(on_time), DEVICE_CB(acknowledge), MSR_CB(on_msr))  # kept: the hooks call them
        self._lib.dl_set_devices(self._state, uc_function("raise_interrupt_x86_64"), *self._callbacks[:2])
        if self.msr_hooks and hasattr(source, "write_msr"):
            self._lib.dl_set_msr(self._state, self._callbacks[2])
        self.sync()

    def sync(self) -> None:
        """Tell the hooks the controller's line and next event (after a device register changed)."""
        if self._source is None:
            return
        self._lib.dl_set_irq_line(self._state, int(self._source.asserted()))
        when = self._source.next_event()
        self._lib.dl_set_next_event(self._state, NEVER if when is None else when)

    def halt_until_interrupt(self) -> bool:
        """The CPU executed `hlt` with interrupts on: advance the clock to the next device event (an
        asserted line wakes it at once). False when nothing can ever wake it."""
        if self._source is None:
            return False
        if not self._source.asserted():
            when = self._source.next_event()
            if when is None:
                return False
            self._lib.cm_idle(self._keep.native_state, when)
        self._lib.dl_check_now(self._state)  # the devices are looked at before the next block runs
        return True

    @property
    def halted_cycles(self) -> int:
        return self._lib.cm_halted_mc(self._keep.native_state) // 1000

    @property
    def handle(self) -> int:
        """The native state's address (the allocation tracer asks it which handler is running)."""
        return ctypes.addressof(self._state)

    def _find_env(self, uc: Uc) -> None:
        saved = uc.reg_read(x86.UC_X86_REG_RAX), uc.reg_read(x86.UC_X86_REG_RCX)
        uc.reg_write(x86.UC_X86_REG_RAX, _FIND_ENV[0])
        uc.reg_write(x86.UC_X86_REG_RCX, _FIND_ENV[1])
        found = self._lib.dl_find_env(self._state, *_FIND_ENV, _ENV_SPAN)
        uc.reg_write(x86.UC_X86_REG_RAX, saved[0])
        uc.reg_write(x86.UC_X86_REG_RCX, saved[1])
        if found:
            raise NativeError("cannot find the CPU state in this libunicorn (syscall's #UD needs it)")

    def _hook(self, uc: Uc, kind: int, fn: int, *extra: int) -> None:
        add_native_hook(uc, kind, fn, ctypes.cast(self._state, ctypes.c_void_p), *extra, what="the exception-delivery")

    # -- what the hooks saw -----------------------------------------------------------------

    def stop(self) -> tuple[int, Handled | None]:
        """Why the hooks stopped the CPU (STOP_*), and the exception they stopped at."""
        e = Exception_()
        why = self._lib.dl_stop(self._state, ctypes.byref(e))
        return why, (Handled(e.vector, e.pc, e.cr2, e.insns) if why else None)

    def unfinished(self) -> list[Handled]:
        """The exceptions of a delivery that never finished (a triple fault), first one first."""
        chain = (Exception_ * 8)()
        n = self._lib.dl_delivering(self._state, chain, 8)
        return [Handled(e.vector, e.pc, e.cr2, e.insns) for e in chain[:n]]

    def interrupted(self) -> tuple[int, int] | None:
        """The RIP and RBP of the code the innermost running handler interrupted (None: no handler)."""
        h = Handler_()
        return (h.rip, h.rbp) if self._lib.dl_innermost(self._state, ctypes.byref(h)) else None

    def clear_stop(self) -> None:
        self._lib.dl_clear_stop(self._state)

    def set_calling(self, calling: bool) -> None:
        self._lib.dl_set_calling(self._state, int(calling))

    def delivered(self) -> dict[int, int]:
        """Deliveries by vector (exceptions, `int n`, device interrupts)."""
        counts = self._lib.dl_delivered(self._state)
        return {v: counts[v] for v in range(256) if counts[v]}

    def recent(self) -> list[Handled]:
        """The last few CPU exceptions handled, oldest first."""
        out = (Exception_ * 8)()
        n = self._lib.dl_recent(self._state, out)
        return [Handled(e.vector, e.pc, e.cr2, e.insns) for e in out[:n]]
