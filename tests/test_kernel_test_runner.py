"""The in-kernel test runner: a failing assertion fails its test, the run goes on, exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulator import boot
from emulator.toolchain.build import ROOT, _read_sources, assemble_kernel

pytestmark = pytest.mark.boot

EXTRA = """
.section text
.function failing, extra::failing
failing:
    push rbp
    mov rbp, rsp
    mov edi, 1
    mov esi, 2
    .srcloc .Lhere
    lea rdx, [rip + .Lhere]
    call assert_eq
    pop rbp
    ret
.endfunction
.function passing, extra::passing
passing:
    push rbp
    mov rbp, rsp
    pop rbp
    ret
.endfunction
.section testtable
    .quad .Lf, .Lf_end - .Lf, failing, 0
    .quad .Lp, .Lp_end - .Lp, passing, 0
.section rodata
.Lf: .ascii "extra::a_failing_test"
.Lf_end:
.Lp: .ascii "extra::a_passing_test"
.Lp_end:
"""


def test_failed_assertion_reports_both_values_and_the_run_continues(tmp_path: Path):
    image = assemble_kernel(_read_sources(ROOT / "kernel_asm") + [("extra/failing.s", EXTRA)])
    path = tmp_path / "kernel.elf"
    path.write_bytes(image.elf)
    run = boot(path, cmdline="test=extra::")
    assert run.exit_code == 1
    assert "running 2 tests\n" in run.serial
    assert ("test extra::a_failing_test ... FAILED\npanicked at extra/failing.s:9:5:\n"
            "assertion `left == right` failed\n  left: 1\n right: 2\n") in run.serial
    assert "test extra::a_passing_test ... ok\n" in run.serial
    assert "test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 49 filtered out" in run.serial
