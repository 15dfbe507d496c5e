"""The patched Unicorn (third_party/unicorn) against the stock wheel's library: the same instruction
counts, cycles, serial output, allocator events and fault reports on the test suite's images and on
a guest without NX that stores next to its code and rewrites it; and the build script's fallback.

Each library runs in its own process (LIBUNICORN_PATH picks it): the stock one is the wheel's file,
kept by the build script in the cache under .venv; the patched one is the cached build (built here
if `make` has not built it yet)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.guest import build
from tests.support.paths import KERNEL, ROOT
from tests.support.processes import communicate_or_kill

SCRIPT = ROOT / "third_party" / "unicorn" / "build.py"
KERNEL_CMDLINES = ("", "test", "churn=10000 seed=1", "allocator=bump test")
NOTICE = re.compile(r"^aeth-emu: patched Unicorn not built \((?P<reason>.+)\); using the stock wheel, "
                    r"stores are slower$")


def build_script():
    spec = importlib.util.spec_from_file_location("unicorn_build_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return build_script()


@pytest.fixture(scope="module")
def libraries(script) -> dict[str, Path]:
    """Directories holding the stock and the patched libunicorn.so.2."""
    cache = script.default_cache()
    installed = script.Installed()
    return {"stock": script.stock_library(installed, cache).parent, "patched": script.build(cache).parent}


# -- guests -------------------------------------------------------------------------------------

EMIT = """
.function emit, t::emit
emit:
    mov dx, COM1
    mov eax, edi
    out dx, al
    ret
.endfunction
"""

# Identity-mapped with 2 MiB pages and no NX (tests/support/guest.py), so every page is writable and
# executable: the case Unicorn's stock store path is slow on. It rewrites code that has run and stores
# many times next to its code; then it stores to a fresh page through two virtual mappings of it (on
# the patched build both TLB entries turn fast while the page holds no code), puts code there, runs
# it, rewrites it through the first mapping and then through the second (the patched build must have
# made both slow again when the code was translated), and stores across a page boundary.
SMC = EMIT + """
.function patch_me, smc::patch_me
patch_me:
    mov eax, 1
    ret
.endfunction
near_code: .zero 16
.function main, smc::main
main:
    push rbp
    mov rbp, rsp
    push rbx
    push r12
    call patch_me
    lea edi, [eax + 'A']
    call emit
    lea rax, [rip + patch_me]
    mov byte ptr [rax + 1], 2
    call patch_me
    lea edi, [eax + 'A']
    call emit
    lea rsi, [rip + near_code]
    mov ecx, 5000
.Lnear:
    mov qword ptr [rsi], rcx
    add qword ptr [rsi + 8], 1
    dec ecx
    jnz .Lnear
    mov edi, 'x'
    mov edx, '+'
    cmp qword ptr [rsi + 8], 5000
    cmove edi, edx
    call emit
    call patch_me
    lea edi, [eax + 'A']
    call emit
    lea rbx, [rip + fresh]
    mov rax, rbx
    shr rax, 21
    lea rdx, [rip + boot_pd]
    mov rcx, qword ptr [rdx + rax*8]
    mov qword ptr [rdx + 511*8], rcx
    mov rax, cr3
    mov cr3, rax
    mov r12, rbx
    and r12, 0x1FFFFF
    add r12, 0x3FE00000
    mov ecx, 1000
.Lfresh:
    mov qword ptr [rbx + 64], rcx
    mov qword ptr [r12 + 128], rcx
    dec ecx
    jnz .Lfresh
    mov byte ptr [rbx], 0xB8
    mov dword ptr [rbx + 1], 3
    mov byte ptr [rbx + 5], 0xC3
    call rbx
    lea edi, [eax + 'A']
    call emit
    mov dword ptr [rbx + 1], 4
    call rbx
    lea edi, [eax + 'A']
    call emit
    mov dword ptr [r12 + 1], 5
    call rbx
    lea edi, [eax + 'A']
    call emit
    mov rax, 0x1122334455667788
    mov qword ptr [rbx + 4093], rax
    mov edi, 'x'
    mov edx, '+'
    cmp qword ptr [rbx + 4093], rax
    cmove edi, edx
    call emit
    pop r12
    pop rbx
    pop rbp
    ret
.endfunction
.section data
.align 4096
fresh: .zero 8192
.section text
"""
SMC_SERIAL = "BC+CDEF+"


def faulting(instructions: str) -> str:
    """A guest that stores to RAM, then does `instructions`, which fault."""
    return EMIT + f"""
.function main, fault::main
main:
    push rbp
    mov rbp, rsp
    lea rsi, [rip + scratch]
    mov ecx, 100
.Lwarm:
    mov qword ptr [rsi], rcx
    dec ecx
    jnz .Lwarm
    mov edi, 'a'
    call emit
{instructions}
    mov edi, 'z'
    call emit
    pop rbp
    ret
.endfunction
.section data
scratch: .zero 64
.section text
"""


FAULTS = {
    # a virtual address the page tables do not map: #PF
    "page fault on a store": ("    mov rax, 0x123456789000\n    mov qword ptr [rax], 1",
                              "write of 0x123456789000"),
    # identity-mapped, but beyond the 128 MiB of RAM: UC_HOOK_MEM_UNMAPPED
    "store to unbacked memory": ("    mov rax, 0x10000000\n    mov qword ptr [rax], 1", "0x10000000"),
    "load from unbacked memory": ("    mov rax, 0x10000000\n    mov rbx, qword ptr [rax]", "0x10000000"),
    # the BIOS ROM, read first: UC_HOOK_MEM_WRITE_PROT
    "store to the ROM": ("    mov rax, ROM_BASE\n    mov rbx, qword ptr [rax]\n    mov byte ptr [rax], 1",
                         "write to the BIOS ROM"),
}

# Runs in a child process with LIBUNICORN_PATH set: every case, every model, as JSON.
RUNNER = r"""
import hashlib, json, sys
from emulator import boot
from emulator.machine.records import BootConfig
from emulator.machine.session import prepare
from emulator.machine.unicorn_build import loaded_build

def summary(result):
    return {"stop_reason": result.stop_reason.name, "exit_code": result.exit_code, "detail": result.detail,
            "instructions": result.instructions, "firmware_instructions": result.firmware_instructions,
            "cycles": result.cycles, "firmware_cycles": result.firmware_cycles,
            "cycle_breakdown": result.cycle_breakdown, "serial": result.serial.decode("latin-1"),
            "fault": result.fault.to_json() if result.fault else None}

out = {"build": str(loaded_build()), "kind": loaded_build().kind, "patch_set": loaded_build().patch_set}
for name, image, cmdline, traced in json.loads(sys.argv[1]):
    row = {}
    if traced:
        run = boot(image, cmdline=cmdline)
        row["traced"] = summary(run.result)
        row["events"] = len(run.events)
        row["events_sha256"] = hashlib.sha256(repr(list(run.events)).encode()).hexdigest()
    for model in ("full", "off"):
        row[model] = summary(prepare(image, BootConfig(cmdline=cmdline), model=model).run())
    out[name] = row
print(json.dumps(out))
"""


def run_on(library: Path, cases: list) -> dict:
    env = dict(os.environ, LIBUNICORN_PATH=str(library), PYTHONPATH=str(ROOT))
    child = subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(cases)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = communicate_or_kill(child, timeout=300)
    assert child.returncode == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def runs(libraries, tmp_path_factory) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("guests")
    cases = [(f"kernel {c!r}", str(KERNEL), c, True) for c in KERNEL_CMDLINES]
    cases.append(("smc", str(build(tmp, SMC, "smc.elf")), "", False))
    for i, (name, (instructions, _)) in enumerate(FAULTS.items()):
        cases.append((name, str(build(tmp, faulting(instructions), f"fault{i}.elf")), "", False))
    return {kind: run_on(path, cases) for kind, path in libraries.items()}


@pytest.mark.boot
def test_each_child_ran_the_library_it_was_given(runs, script):
    assert runs["stock"]["kind"] == "stock"
    assert runs["patched"]["kind"] == "patched"
    assert runs["patched"]["patch_set"] == script.patch_set_hash()
    assert f"patch set {script.patch_set_hash()}" in runs["patched"]["build"]


@pytest.mark.boot
@pytest.mark.parametrize("cmdline", KERNEL_CMDLINES)
def test_the_kernel_counts_the_same_on_both_builds(runs, cmdline):
    stock, patched = runs["stock"][f"kernel {cmdline!r}"], runs["patched"][f"kernel {cmdline!r}"]
    assert patched == stock
    assert stock["traced"]["exit_code"] == 0 and stock["traced"]["instructions"] > 100_000
    assert stock["traced"]["cycles"] > 0 and stock["events"] > 0
    assert stock["off"]["serial"] == stock["full"]["serial"] and stock["off"]["exit_code"] == 0


@pytest.mark.boot
def test_a_guest_without_nx_rewriting_its_code_behaves_the_same(runs):
    stock, patched = runs["stock"]["smc"], runs["patched"]["smc"]
    assert patched == stock
    for model in ("full", "off"):
        assert (stock[model]["serial"], stock[model]["exit_code"]) == (SMC_SERIAL, 0)
    assert stock["full"]["instructions"] > 20_000 and stock["full"]["cycles"] > stock["full"]["instructions"] // 4


@pytest.mark.boot
@pytest.mark.parametrize("name", FAULTS)
def test_faults_are_reported_the_same_on_both_builds(runs, name):
    stock, patched = runs["stock"][name], runs["patched"][name]
    assert patched == stock
    for model in ("full", "off"):
        result = stock[model]
        assert (result["stop_reason"], result["exit_code"], result["serial"]) == ("FAULT", 3, "a")
        assert FAULTS[name][1] in result["fault"]["summary"]
    assert stock["full"]["fault"] == stock["off"]["fault"]  # the same place, with and without the model


# A bare CPU with a Python memory hook that reads RIP and EFLAGS on every access (the patched build
# restores them only when a hook asks) and, in run k, stops the CPU at the k-th access (the patched
# build checks for the stop in the load/store helpers, not after every access).
HOOKS = r"""
import json
from keystone import KS_ARCH_X86, KS_MODE_64, Ks
from unicorn import UC_ARCH_X86, UC_HOOK_MEM_READ, UC_HOOK_MEM_WRITE, UC_MODE_64, Uc
from unicorn import x86_const as x

CODE = (
    "mov rsi, 0x2000; mov rax, qword ptr [rsi]; add rax, 1; mov qword ptr [rsi + 8], rax;"
    "mov rbx, qword ptr [rsi + 16]; sub rbx, rax; mov qword ptr [rsi + 24], rbx;"
    "add qword ptr [rsi + 32], 5; mov rcx, qword ptr [rsi + 32]; nop"
)
code = bytes(Ks(KS_ARCH_X86, KS_MODE_64).asm(CODE, 0x1000)[0])

def run(stop_at):
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.mem_map(0x1000, 0x1000)
    uc.mem_map(0x2000, 0x1000)
    uc.mem_write(0x1000, code)
    uc.mem_write(0x2000, bytes(range(1, 65)))
    seen = []

    def hook(uc, access, address, size, value, _):
        seen.append([access, address, size, uc.reg_read(x.UC_X86_REG_RIP), uc.reg_read(x.UC_X86_REG_EFLAGS)])
        if len(seen) == stop_at:
            uc.emu_stop()

    uc.hook_add(UC_HOOK_MEM_READ | UC_HOOK_MEM_WRITE, hook)
    uc.emu_start(0x1000, 0x1000 + len(code))
    regs = {r: uc.reg_read(getattr(x, "UC_X86_REG_" + r)) for r in ("RIP", "RAX", "RBX", "RCX", "RSI", "EFLAGS")}
    return {"seen": seen, "regs": regs, "memory": uc.mem_read(0x2000, 64).hex()}

print(json.dumps([run(k) for k in range(8)]))
"""


@pytest.mark.unit
def test_memory_hooks_see_the_same_pc_flags_and_stops_on_both_builds(libraries):
    results = {}
    for kind, library in libraries.items():
        env = dict(os.environ, LIBUNICORN_PATH=str(library))
        done = subprocess.run([sys.executable, "-c", HOOKS], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        results[kind] = json.loads(done.stdout)
    assert results["patched"] == results["stock"]
    free = results["stock"][0]  # no stop: every access, seen at its own instruction
    read, write = 16, 17  # UC_MEM_READ, UC_MEM_WRITE
    assert [s[:4] for s in free["seen"]] == [
        [read, 0x2000, 8, 0x1007], [write, 0x2008, 8, 0x100E], [read, 0x2010, 8, 0x1012],
        [write, 0x2018, 8, 0x1019], [read, 0x2020, 8, 0x101D], [write, 0x2020, 8, 0x101D],
        [read, 0x2020, 8, 0x1022]]
    assert free["regs"]["RIP"] == 0x1027 and free["regs"]["RAX"] == 0x0807060504030202
    for k, run in enumerate(results["stock"][1:], start=1):
        assert len(run["seen"]) == k and run["regs"]["RIP"] == run["seen"][-1][3]  # stopped at that access


# -- the build script ---------------------------------------------------------------------------

def site_copy(tmp_path: Path, library: Path, marker: Path | None = None) -> Path:
    """A site-packages holding the venv's unicorn package (without its static library) and
    dist-info, with `library` as its libunicorn.so.2."""
    import unicorn

    package = Path(unicorn.__file__).parent
    dist_info = next(package.parent.glob("unicorn-*.dist-info"))
    site = tmp_path / "site"
    shutil.copytree(package, site / "unicorn", ignore=shutil.ignore_patterns("*.a", "__pycache__"))
    shutil.copytree(dist_info, site / dist_info.name)
    shutil.copyfile(library, site / "unicorn" / "lib" / "libunicorn.so.2")
    (site / "unicorn" / "lib" / "libunicorn.so.2.aeth-build").unlink(missing_ok=True)
    if marker is not None:
        shutil.copyfile(marker, site / "unicorn" / "lib" / "libunicorn.so.2.aeth-build")
    return site


def run_script(*args: str) -> tuple[int, list[str]]:
    child = subprocess.Popen([sys.executable, str(SCRIPT), *args], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    out, _ = communicate_or_kill(child, timeout=300)
    return child.returncode, out.splitlines()


def loaded_in(site: Path) -> dict:
    """What a process using `site`'s unicorn package runs on, and whether it executes code."""
    code = ("import json\nfrom unicorn import Uc, UC_ARCH_X86, UC_MODE_64\n"
            "from unicorn.x86_const import UC_X86_REG_RAX\n"
            "from emulator.machine.unicorn_build import loaded_build\n"
            "uc = Uc(UC_ARCH_X86, UC_MODE_64); uc.mem_map(0x1000, 0x1000)\n"
            "uc.mem_write(0x1000, bytes.fromhex('48c7c02a000000')); uc.emu_start(0x1000, 0x1007)\n"
            "b = loaded_build()\n"
            "print(json.dumps({'rax': uc.reg_read(UC_X86_REG_RAX), 'kind': b.kind, 'library': b.library}))\n")
    env = {k: v for k, v in os.environ.items() if k != "LIBUNICORN_PATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.unit
def test_a_failed_build_puts_the_stock_library_back_and_says_so_in_one_line(tmp_path, libraries, script):
    """A venv that had the patched library, then a patch set that does not apply: the wheel's library
    comes back, the marker goes, one line says why, and the exit status lets `make` go on."""
    patched = libraries["patched"] / "libunicorn.so.2"
    site = site_copy(tmp_path, patched, libraries["patched"] / "libunicorn.so.2.aeth-build")
    assert loaded_in(site)["kind"] == "patched"
    cache = tmp_path / "cache"
    (cache / "stock-2.1.4").mkdir(parents=True)
    shutil.copyfile(libraries["stock"] / "libunicorn.so.2", cache / "stock-2.1.4" / "libunicorn.so.2")
    patches = tmp_path / "patches"
    shutil.copytree(script.PATCHES, patches)
    broken = sorted(patches.glob("*.patch"))[0]
    broken.write_text(broken.read_text().replace("cpu_physical_memory_test_and_clear_dirty(ram_addr",
                                                 "cpu_physical_memory_test_and_clear_dirty(xram_addr", 1))
    sdist = script.default_cache() / "sdist" / script.SDIST
    if not sdist.is_file():
        script.fetch_sdist(script.default_cache(), None, None)
    status, lines = run_script("--site", str(site), "--cache", str(cache), "--patches", str(patches),
                               "--sdist", str(sdist))
    assert status == 0 and len(lines) == 1, lines
    reason = NOTICE.match(lines[0]).group("reason")
    assert reason == f"{broken.name} does not apply to qemu/accel/tcg/cputlb.c at line 614"
    assert script.sha256_file(site / "unicorn" / "lib" / "libunicorn.so.2") == script.Installed(site).stock_sha256
    assert not (site / "unicorn" / "lib" / "libunicorn.so.2.aeth-build").exists()
    assert loaded_in(site) == {"rax": 42, "kind": "stock", "library": str(site / "unicorn" / "lib" / "libunicorn.so.2")}


@pytest.mark.unit
def test_a_bad_sdist_is_refused_and_the_stock_wheel_stays(tmp_path, libraries, script):
    site = site_copy(tmp_path, libraries["stock"] / "libunicorn.so.2")
    bogus = tmp_path / script.SDIST
    bogus.write_bytes(b"not the unicorn sdist")
    status, lines = run_script("--site", str(site), "--cache", str(tmp_path / "cache"), "--sdist", str(bogus))
    assert status == 0 and len(lines) == 1, lines
    assert NOTICE.match(lines[0]).group("reason").startswith(f"{script.SDIST} has sha256 ")
    assert loaded_in(site)["kind"] == "stock"
    # the wheel's library was kept before anything else happened
    assert script.sha256_file(tmp_path / "cache" / "stock-2.1.4" / "libunicorn.so.2") == \
        script.Installed(site).stock_sha256


@pytest.mark.unit
def test_a_cached_build_installs_at_once_and_a_second_run_does_nothing(tmp_path, libraries, script):
    site = site_copy(tmp_path, libraries["stock"] / "libunicorn.so.2")
    cache = tmp_path / "cache"
    key = script.build_key()
    shutil.copytree(libraries["patched"], cache / key)
    status, lines = run_script("--site", str(site), "--cache", str(cache))
    assert (status, lines) == (0, [f"aeth-emu: patched Unicorn 2.1.4 installed (patch set {script.patch_set_hash()}, "
                                   "cached build)"])
    assert loaded_in(site)["kind"] == "patched"
    started = time.monotonic()
    assert run_script("--site", str(site), "--cache", str(cache)) == (0, [])
    assert time.monotonic() - started < 5
    # and --stock puts the wheel's library back
    assert run_script("--site", str(site), "--cache", str(cache), "--stock") == \
        (0, ["aeth-emu: the stock Unicorn 2.1.4 library is installed"])
    assert loaded_in(site)["kind"] == "stock"


@pytest.mark.unit
def test_the_patches_apply_only_where_they_say(tmp_path, script):
    target = tmp_path / "f.c"
    target.write_text("a\nb\nc\n")
    patch = tmp_path / "p.patch"
    patch.write_text("description\n---\n--- a/f.c\n+++ b/f.c\n@@ -2,1 +2,2 @@\n-b\n+B\n+B2\n")
    script.apply_patch(patch, tmp_path)
    assert target.read_text() == "a\nB\nB2\nc\n"
    with pytest.raises(script.BuildError, match="does not apply to f.c at line 2"):
        script.apply_patch(patch, tmp_path)  # `b` is no longer at line 2: no fuzz, no search
