"""A flat profile of a run: model cycles and instructions by function, firmware included."""

from __future__ import annotations

from emulator.cycles.accounting import UNATTRIBUTED
from emulator.machine.board import Machine

FIRMWARE = "(firmware)"
FLUSHED = "(flushed blocks, unattributed)"  # the model's table overflowed (emulator/cycles/accounting.py)


def flat_profile(machine: Machine) -> list[tuple[str, int, int]]:
    """(function, instructions, cycles), most cycles first."""
    totals: dict[str, list[int]] = {}
    symbols = machine.image.symbols
    for accounting, is_firmware in machine.accountings():
        for address, (insns, cycles) in accounting.profile().items():
            found = None if is_firmware or address == UNATTRIBUTED else symbols.lookup(address)
            if is_firmware:
                name = FIRMWARE
            elif address == UNATTRIBUTED:
                name = FLUSHED
            else:
                name = found[0].name if found else f"0x{address:x}"
            row = totals.setdefault(name, [0, 0])
            row[0] += insns
            row[1] += cycles
    return sorted(((n, i, c) for n, (i, c) in totals.items()), key=lambda r: (-r[2], r[0]))
