"""Calling a guest function from the host: the System V x86-64 ABI on the kernel's CPU.

The call runs on the machine as the run left it (page tables, heap), on a stack well below the
guest's own, with a return address in the null page that no kernel executes: returning there
faults (#PF on fetch), which the machine's interrupt hook recognises as the call's end.
Every register is restored afterwards. The allocator hooks see the call like any other.
"""

from __future__ import annotations

from typing import Protocol

from unicorn import Uc

from emulator.errors import GuestCallError
from emulator.guestmem.virtual import VirtualMemory
from emulator.image.loader import KernelImage
from emulator.machine import cpu
from emulator.machine.physmem import PhysicalMemory
from emulator.machine.records import Stop


class CallHost(Protocol):
    """What a host call needs of the machine (emulator.machine.board.Machine provides it)."""

    uc: Uc | None
    memory: PhysicalMemory
    image: KernelImage

    @property
    def exited(self) -> bool: ...

    def virtual(self, uc: Uc | None = None) -> VirtualMemory: ...

    def run_nested(self, begin: int, until: int, max_insns: int) -> Stop | None: ...

CALL_RETURN = 0  # the return address pushed for a host call: the null page
ARGUMENT_REGISTERS = ("rdi", "rsi", "rdx", "rcx", "r8", "r9")
STACK_GAP = 4096  # below the guest's rsp: past the red zone and anything the guest left there
U64 = (1 << 64) - 1


def call_function(machine: CallHost, function: str | int, args: tuple[int, ...], *,
                  max_insns: int = 50_000_000, sret: int = 0) -> tuple[int, bytes | None]:
    """Run `function` to its return; returns (rax, the sret struct's bytes or None)."""
    if not machine.exited:
        raise GuestCallError("a guest function can only be called after the kernel booted and exited normally")
    if len(args) + (1 if sret else 0) > len(ARGUMENT_REGISTERS):
        raise GuestCallError(f"a guest call passes at most {len(ARGUMENT_REGISTERS)} integer arguments")
    address = _resolve(machine, function)
    uc = machine.uc
    saved = uc.context_save()
    vm = machine.virtual(uc)
    rsp = (cpu.read(uc, "rsp") - STACK_GAP) & ~0xF
    result_at = None
    if sret:
        rsp -= (sret + 15) & ~0xF
        result_at = rsp
        args = (result_at, *args)
    rsp -= 8  # aligned as right after a call
    machine.memory.write(vm.translate(rsp), CALL_RETURN.to_bytes(8, "little"))
    for reg, value in zip(ARGUMENT_REGISTERS, args):
        cpu.write(uc, reg, value & U64)
    cpu.write(uc, "rsp", rsp)
    where = machine.image.symbols.describe(address)
    if address == CALL_RETURN:  # emulation from the stop address would end before its first fetch
        uc.context_restore(saved)
        raise GuestCallError(f"{where} did not return: it is the null page, where a fetch faults")
    failed = machine.run_nested(address, CALL_RETURN, max_insns)
    rip, rax, after = cpu.read(uc, "rip"), cpu.read(uc, "rax"), cpu.read(uc, "rsp")
    uc.context_restore(saved)
    if failed is not None:
        raise GuestCallError(f"{where} did not return: {failed.detail}", failed.fault)
    if rip != CALL_RETURN or after != rsp + 8:  # a return pops exactly the address pushed
        raise GuestCallError(f"{where} did not return within {max_insns} instructions")
    return rax, (vm.read(result_at, sret) if result_at is not None else None)


def _resolve(machine: CallHost, function: str | int) -> int:
    if isinstance(function, str):
        symbol = machine.image.symbols.get(function)
        if symbol is None:
            raise GuestCallError(f"the image has no symbol named {function!r}")
        return symbol.address
    if not isinstance(function, int) or isinstance(function, bool) or not 0 <= function <= U64:
        raise GuestCallError(f"{function!r} is not a 64-bit address or a symbol name")
    return function
