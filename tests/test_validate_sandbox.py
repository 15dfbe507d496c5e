"""`aeth-emu validate` runs an image's code natively, but never in aeth-emu's process and never
with a way out to the host: a forked child, every descriptor but its result pipe closed (0, 1 and
2 on /dev/null), a seccomp filter allowing read, write and exit only, a time limit; images other
than the shipped kernel only on request (--native-untrusted)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from keystone import KS_ARCH_X86, KS_MODE_64, Ks

from emulator.calibrate.sandbox import NativeCase, NativeRunFailed, run_native
from emulator.calibrate.validate import CASES, CODE, CODE_SIZE, DATA, case_source, kernel_addresses, native_ticks
from emulator.errors import EmulatorError
from emulator.image.loader import load_image
from emulator.toolchain.build import assemble_flat
from tests.support.guest import build
from tests.support.paths import KERNEL

pytestmark = pytest.mark.unit

BUMP_INIT = "aetherion::allocator::bump::BumpAllocator::init"
REGIONS = [(CODE, CODE_SIZE), (DATA, 0x1000)]


def _code(source: str, address: int = CODE) -> bytes:
    encoding, _ = Ks(KS_ARCH_X86, KS_MODE_64).asm(source, address)
    return bytes(encoding)


def _strings(*texts: bytes) -> str:
    """`.byte` lines for NUL-terminated strings, labelled s0, s1, ..."""
    return "\n".join(f"s{i}: .byte " + ", ".join(str(b) for b in text + bytes(1)) for i, text in enumerate(texts))


def _run(functions: list[str], time_limit: float = 20.0, args: list[int] | None = None, writes=None) -> list[int]:
    """Each source in `functions` at its own 4 KiB page of CODE, timed once per case (3 calls)."""
    setup, cases = [], []
    for i, source in enumerate(functions):
        address = CODE + i * 0x1000
        setup.append((address, _code(source, address)))
        cases.append(NativeCase(f"f{i}", address, (args or [0] * len(functions))[i], 3,
                                (writes or [()] * len(functions))[i]))
    return run_native(REGIONS, setup, cases, time_limit)


def _mapped(address: int) -> bool:
    for line in Path("/proc/self/maps").read_text().splitlines():
        start, end = (int(x, 16) for x in line.split()[0].split("-"))
        if start <= address < end:
            return True
    return False


LOOP = "    mov rcx, rdi\n.Lloop:\n    dec rcx\n    jnz .Lloop\n    ret\n"


def test_benign_functions_come_back_with_their_ticks_and_this_process_maps_nothing():
    short, long = _run([LOOP, LOOP], args=[10, 200_000])
    # 200000 dependent decrements take 200000 core cycles at least (>= 0.3 TSC tick each on any host)
    assert long > 60_000 and short < long / 100
    assert not _mapped(CODE) and not _mapped(DATA)  # the guest code never lived in this process


def test_per_case_writes_land_before_their_case():
    counted = "    mov rax, 0x71000000\n    mov rcx, qword ptr [rax]\n.Lloop:\n    dec rcx\n    jnz .Lloop\n    ret\n"
    few, many = _run([counted, counted], writes=[[(DATA, (10).to_bytes(8, "little"))],
                                                 [(DATA, (200_000).to_bytes(8, "little"))]])
    assert many > 60_000 and few < many / 100


def test_a_system_call_kills_the_child_and_names_the_case():
    with pytest.raises(NativeRunFailed) as caught:
        _run([LOOP, "    mov eax, 39\n    syscall\n    ret\n", LOOP], args=[10, 0, 10])  # getpid
    assert caught.value.kind == "syscall" and caught.value.case == "f1"
    assert "native case f1 made a system call" in str(caught.value)
    assert isinstance(caught.value, EmulatorError)


@pytest.mark.parametrize("call", [
    "    mov eax, 20\n    int 0x80\n",            # i386 getpid: another ABI, same filter
    "    mov eax, 0x40000027\n    syscall\n",     # x32 getpid
    "    mov eax, 231\n    xor edi, edi\n    syscall\n",  # exit_group (glibc's _exit)
])
def test_other_abis_and_exit_group_are_killed_too(call):
    with pytest.raises(NativeRunFailed) as caught:
        _run([call + "    ret\n"])
    assert caught.value.kind == "syscall" and caught.value.case == "f0"


def test_execve_and_open_do_nothing_on_the_host(tmp_path):
    marker, created = tmp_path / "shell-ran", tmp_path / "created"
    execve = ("    lea rdi, [rip + s0]\n    push 0\n    lea rax, [rip + s2]\n    push rax\n    lea rax, [rip + s1]\n"
              "    push rax\n    push rdi\n    mov rsi, rsp\n    xor edx, edx\n    mov eax, 59\n    syscall\n"
              "    add rsp, 32\n    ret\n" + _strings(b"/bin/sh", b"-c", f"touch {marker}".encode()))
    opener = ("    lea rdi, [rip + s0]\n    mov esi, 0x41\n    mov edx, 0x1a4\n    mov eax, 2\n    syscall\n    ret\n"
              + _strings(str(created).encode()))
    for source in (execve, opener):
        with pytest.raises(NativeRunFailed) as caught:
            _run([source])
        assert caught.value.kind == "syscall"
    time.sleep(0.2)
    assert not marker.exists() and not created.exists()


def test_writes_reach_no_host_descriptor(tmp_path, capfd):
    """write is allowed, but every descriptor the child could name is /dev/null (0, 1, 2), its
    result pipe (3) or closed."""
    target = tmp_path / "open-in-parent"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        scribble = ("    push rbx\n    mov rbx, rdi\n.Lnext:\n    cmp rbx, 3\n    je .Lpipe\n    mov rdi, rbx\n"
                    "    lea rsi, [rip + s0]\n    mov edx, 5\n    mov eax, 1\n    syscall\n.Lpipe:\n    dec rbx\n"
                    "    jns .Lnext\n    pop rbx\n    ret\n" + _strings(b"PWNED"))
        ticks = _run([scribble], args=[fd + 8])  # every descriptor from fd + 8 down to 0 but 3
    finally:
        os.close(fd)
    out, err = capfd.readouterr()
    assert ticks[0] > 0
    assert "PWNED" not in out and "PWNED" not in err and target.read_bytes() == b""


def test_the_parents_writable_shared_mappings_are_gone_in_the_child(tmp_path):
    """A file this process maps shared and writable: guest stores there would reach the file."""
    import ctypes
    import mmap

    target = tmp_path / "shared"
    target.write_bytes(bytes(4096))
    with open(target, "r+b") as f, mmap.mmap(f.fileno(), 4096) as shared:
        view = ctypes.c_char.from_buffer(shared)
        address = ctypes.addressof(view)
        del view  # (a live export would keep the mapping from closing)
        store = f"    mov rax, {address:#x}\n    mov rcx, 0x44454e5750\n    mov qword ptr [rax], rcx\n    ret\n"
        with pytest.raises(NativeRunFailed) as caught:
            _run([store])
        assert caught.value.kind == "crashed" and "SIGSEGV" in str(caught.value)
        assert shared[:8] == bytes(8)
    assert target.read_bytes() == bytes(4096)


def test_a_crash_is_reported_as_a_crash():
    with pytest.raises(NativeRunFailed) as caught:
        _run([LOOP, "    xor eax, eax\n    mov rax, qword ptr [rax + 8]\n    ret\n"], args=[10, 0])
    assert caught.value.kind == "crashed" and caught.value.case == "f1" and "SIGSEGV" in str(caught.value)


def test_an_early_exit_is_not_a_result():
    with pytest.raises(NativeRunFailed) as caught:
        _run(["    mov eax, 60\n    xor edi, edi\n    syscall\n    ret\n", LOOP], args=[0, 10])
    assert caught.value.kind == "exited" and caught.value.case == "f0"


def test_the_time_limit_kills_a_case_that_never_returns():
    started = time.monotonic()
    with pytest.raises(NativeRunFailed) as caught:
        _run([LOOP, ".Lspin:\n    jmp .Lspin\n"], time_limit=0.5, args=[10, 0])
    assert time.monotonic() - started < 5
    assert caught.value.kind == "timeout" and caught.value.case == "f1"
    assert "time limit of 0.5 s" in str(caught.value)


def test_a_region_that_is_taken_is_a_setup_error():
    taken = (id(object()) & ~0xFFF, 0x1000)  # a page of this process's heap, so of the child's too
    with pytest.raises(NativeRunFailed) as caught:
        run_native([taken], [], [NativeCase("none", taken[0], 0)])
    assert caught.value.kind == "setup" and "the range is taken" in str(caught.value)


def test_the_shipped_kernels_allocators_run_in_the_sandbox():
    image = load_image(KERNEL, 4096 << 20)
    cases = [case for case in CASES if case.name in ("alu_dependent", "bump_alloc", "linked_list_alloc")]
    flat = assemble_flat([("validate.s", case_source(cases, kernel_addresses(image)))], CODE, CODE_SIZE,
                         default_mode=64)
    ticks = native_ticks(image, flat.data, [flat.symbols[f"case_{c.name}"] for c in cases], cases, [[]] * len(cases))
    # alu_dependent is 8 x 20000 dependent register adds: 160000 core cycles, >= 0.3 tick each on any host
    assert ticks[0] > 48_000 and all(t > 0 for t in ticks)


# --- the command line on a hostile image -------------------------------------------------------


def aeth(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emulator", *args], capture_output=True, text=True, timeout=120)


def _file_offset(elf_bytes: bytes, address: int) -> int:
    import io

    for segment in ELFFile(io.BytesIO(elf_bytes)).iter_segments():
        h = segment.header
        if h["p_type"] == "PT_LOAD" and h["p_vaddr"] <= address < h["p_vaddr"] + h["p_filesz"]:
            return h["p_offset"] + address - h["p_vaddr"]
    raise AssertionError(f"0x{address:x} is in no PT_LOAD segment's file bytes")


@pytest.fixture
def hostile(tmp_path) -> tuple[Path, Path, Path]:
    """The shipped kernel with BumpAllocator::init (first run by validate's bump_alloc case)
    replaced by: write(2, "PWNED"), open(pwned, O_CREAT|O_WRONLY), execve("/bin/sh -c touch shell")."""
    pwned, shell = tmp_path / "pwned", tmp_path / "shell-ran"
    data = bytearray(KERNEL.read_bytes())
    init = load_image(KERNEL, 4096 << 20).symbols.address(BUMP_INIT)
    payload = _code("    mov edi, 2\n    lea rsi, [rip + s0]\n    mov edx, 5\n    mov eax, 1\n    syscall\n"
                    "    lea rdi, [rip + s1]\n    mov esi, 0x41\n    mov edx, 0x1a4\n    mov eax, 2\n    syscall\n"
                    "    lea rdi, [rip + s2]\n    push 0\n    lea rax, [rip + s4]\n    push rax\n    lea rax, [rip + s3]\n"
                    "    push rax\n    push rdi\n    mov rsi, rsp\n    xor edx, edx\n    mov eax, 59\n    syscall\n"
                    "    add rsp, 32\n    ret\n"
                    + _strings(b"PWNED", str(pwned).encode(), b"/bin/sh", b"-c", f"touch {shell}".encode()), init)
    offset = _file_offset(bytes(data), init)
    assert _file_offset(bytes(data), init + len(payload) - 1) == offset + len(payload) - 1
    data[offset:offset + len(payload)] = payload
    path = tmp_path / "hostile.elf"
    path.write_bytes(data)
    assert load_image(path, 4096 << 20).symbols.address(BUMP_INIT) == init
    return path, pwned, shell


def test_validate_refuses_an_image_that_is_not_the_shipped_kernel(hostile):
    image, pwned, shell = hostile
    for extra in ((), ("--probes",)):
        done = aeth("validate", str(image), *extra)
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "not the kernel shipped with aeth-emu" in lines[0]
        assert "--native-untrusted" in lines[0]
    assert not pwned.exists() and not shell.exists()


def test_validate_native_untrusted_sandboxes_the_hostile_code(hostile):
    image, pwned, shell = hostile
    assert "bump_alloc" in [case.name for case in CASES if case.uses_kernel]
    done = aeth("validate", str(image), "--native-untrusted")
    time.sleep(0.2)  # a shell started behind our back would have had time to run
    assert not pwned.exists() and not shell.exists()
    assert "PWNED" not in done.stderr and "PWNED" not in done.stdout
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == ("aeth-emu: error: native case bump_alloc made a system call; the sandbox killed it "
                                   "(only read, write and exit are allowed)")


def test_validate_on_an_image_without_the_allocators_is_one_line(tmp_path):
    image = build(tmp_path, "main:\n    ret\n")
    done = aeth("validate", str(image), "--native-untrusted")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "which validate needs" in lines[0] and f"no symbol '{BUMP_INIT}'" in lines[0]


def test_native_time_limit_is_an_option_and_must_be_positive():
    done = aeth("validate", "--native-time-limit", "0")
    assert done.returncode == 2 and "must be positive" in done.stderr
