"""The validation harness's own parts (the host measurement itself is `make validate`)."""

from __future__ import annotations

import struct

from conftest import KERNEL

from emulator.loader import load_image
from emulator.toolchain.build import assemble_flat
from emulator.validate import CASES, CODE, CODE_SIZE, DATA, chain_bytes, case_source, kendall_tau, kernel_addresses, mape


def test_kendall_tau_and_mape():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [40, 30, 20, 10]) == -1.0
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == 1 / 3
    assert mape([0.1, -0.3]) == 20.0


def test_pointer_chain_visits_every_node_once():
    data, first = chain_bytes(4096, 64)
    seen, node = set(), first
    for _ in range(64):
        seen.add(node)
        node = struct.unpack_from("<Q", data, node - DATA)[0]
    assert node == first and len(seen) == 64 and all((n - DATA - 8) % 64 == 0 for n in seen)


def test_every_case_assembles_against_the_kernel():
    kernel = kernel_addresses(load_image(KERNEL, 4096 << 20))
    flat = assemble_flat([("validate.s", case_source(CASES, kernel))], CODE, CODE_SIZE, default_mode=64)
    assert len(CASES) >= 20
    assert all(f"case_{case.name}" in flat.symbols for case in CASES)
