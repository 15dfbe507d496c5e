"""Names for the addresses a trace mentions: each return address's call instruction and its
symbol+offset, found once per address (x86 calls are 2 to 7 bytes: the one that ends at the
return address is decoded from guest memory)."""

from __future__ import annotations

from collections.abc import Callable

from emulator.errors import GuestMemoryError
from emulator.image.symbols import SymbolTable

CALL_LENGTHS = (5, 2, 3, 6, 7, 4)  # the common lengths first


class SiteNames:
    def __init__(self, symbols: SymbolTable) -> None:
        self.symbols = symbols
        self._sites: dict[int, tuple[int, str]] = {}  # return address -> (call instruction, its name)
        self._cs = None

    def learn(self, addresses, read: Callable[[int, int], bytes]) -> list[tuple[int, int, str]]:
        """Name new addresses while guest memory holds their code; returns (address, call, name) of each."""
        out = []
        for address in addresses:
            if address not in self._sites:
                call = self._find_call(address, read)
                self._sites[address] = (call, self.symbols.describe(call))
            out.append((address, *self._sites[address]))
        return out

    def call_site(self, address: int) -> int:
        return self._site(address)[0]

    def name(self, address: int) -> str:
        return self._site(address)[1]

    def _site(self, address: int) -> tuple[int, str]:
        site = self._sites.get(address)
        if site is None:  # not seen in a batch (an address given by hand): named without its call
            site = self._sites[address] = (address, self.symbols.describe(address))
        return site

    def _find_call(self, return_address: int, read: Callable[[int, int], bytes]) -> int:
        if self._cs is None:
            from capstone import CS_ARCH_X86, CS_MODE_64, Cs

            self._cs = Cs(CS_ARCH_X86, CS_MODE_64)
        for length in CALL_LENGTHS:
            start = return_address - length
            try:
                code = read(start, length)
            except GuestMemoryError:
                continue
            insn = next(self._cs.disasm(code, start), None)
            if insn is not None and insn.size == length and insn.mnemonic == "call":
                return start
        return return_address
