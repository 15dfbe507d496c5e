"""`aeth-emu validate` / `make validate`: the cycle model against the host CPU running the same code.

Each case is a small function of machine code (a loop of `n` iterations), assembled once with
our toolchain. It runs natively — in a sandboxed child process (calibrate/sandbox.py: mapped at
its link address next to the kernel image's own segments, no system call but read, write and
exit, a time limit), called through the System V ABI, timed with fenced `rdtsc`, the minimum of
many calls — and in the model, warm (the second of two calls). The image's allocators run
natively too, so only the kernel shipped with aeth-emu runs unless the caller insists
(`native_untrusted`). TSC ticks become core cycles through a dependent `add` chain, one cycle
per add on Zen 4. llvm-mca (Debian's llvm, `-mcpu=znver3`: its newest Zen) predicts the same
loop bodies as a baseline. Reported: each case's error, the mean absolute percentage error
(MAPE) and Kendall's tau of the ranking.
"""

from __future__ import annotations

import random
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from unicorn import UC_ARCH_X86, UC_MODE_64, Uc
from unicorn import x86_const as x86

from emulator.calibrate.sandbox import DEFAULT_TIME_LIMIT, NativeCase, run_native
from emulator.cycles.accounting import CycleAccounting
from emulator.errors import ImageError, UsageError
from emulator.image.bundled import bundled_kernel
from emulator.image.loader import KernelImage, load_image
from emulator.machine.hostsignals import STOP_SIGNALS, StopOnSignals
from emulator.toolchain.build import assemble_flat

CODE, DATA, STACK = 0x7000_0000, 0x7100_0000, 0x6F00_0000
DATA_SIZE, STACK_SIZE, CODE_SIZE = 72 << 20, 1 << 16, 1 << 16
LINE = 64
RNG_STATE = DATA + (70 << 20)  # past the largest pointer chain


@dataclass(frozen=True)
class Case:
    name: str
    body: str  # the loop body, Intel syntax; `rbx` counts iterations and must be left alone
    iterations: int
    prologue: str = ""
    chain: tuple[int, int] | None = None  # (bytes, stride): a shuffled pointer chain at DATA
    uses_kernel: bool = False
    epilogue: str = ""
    seed: int | None = None  # written to RNG_STATE before the case runs


def _chase(span: int, stride: int = LINE) -> tuple[int, int]:
    return (span, stride)


_XORSHIFT = ("    mov rdx, r8\n    shl rdx, 13\n    xor r8, rdx\n    mov rdx, r8\n    shr rdx, 7\n    xor r8, rdx\n"
             "    mov rdx, r8\n    shl rdx, 17\n    xor r8, rdx\n")

CASES = [
    # a register source: Golden Cove-class cores fold chains of `add reg, imm` at rename, several a
    # cycle, so an immediate chain does not measure the ALU's latency (nor calibrate the TSC)
    Case("alu_dependent", "    add rax, rdx\n" * 8, 20000, prologue="    mov edx, 1\n"),
    Case("alu_independent", "    add rax, 1\n    add rdx, 1\n    add rsi, 1\n    add r8, 1\n" * 2, 20000),
    Case("imul_dependent", "    imul rax, rax\n" * 4, 20000, prologue="    mov eax, 3\n"),
    Case("div", "    xor edx, edx\n    mov eax, 123456\n    div r8\n", 5000, prologue="    mov r8d, 7\n"),
    Case("load_chain_l1", "    mov rsi, qword ptr [rsi]\n" * 4, 20000, chain=_chase(16 << 10)),
    Case("load_chain_l2", "    mov rsi, qword ptr [rsi]\n" * 4, 20000, chain=_chase(512 << 10)),
    Case("load_chain_l3", "    mov rsi, qword ptr [rsi]\n" * 4, 10000, chain=_chase(8 << 20)),
    Case("load_chain_dram", "    mov rsi, qword ptr [rsi]\n" * 4, 5000, chain=_chase(64 << 20)),
    Case("tlb_stride", "    mov rsi, qword ptr [rsi]\n" * 4, 10000, chain=_chase(16 << 20, 4096 + LINE)),
    Case("store_stream", "    mov qword ptr [rsi], rax\n    add rsi, 8\n    and rsi, rdi\n", 20000,
         prologue="    mov rsi, 0x71000000\n    mov rdi, 0x7100FFF8\n"),
    Case("branch_predictable", "    test bl, 1\n    jz .Lskip\n    add rax, 1\n.Lskip:\n    add rdx, 1\n", 20000),
    # xorshift64 restarted by every call: the host's predictor learns the repeated 20000-outcome
    # sequence (the model's gshare cannot) ...
    Case("branch_learnable", _XORSHIFT + "    test r8b, 1\n    jz .Lskip\n    add rax, 1\n.Lskip:\n", 20000,
         prologue="    mov r8, 0x9E3779B97F4A7C15\n"),
    # ... so the random case goes on where the last call stopped
    Case("branch_random", _XORSHIFT + "    test r8b, 1\n    jz .Lskip\n    add rax, 1\n.Lskip:\n", 20000,
         prologue=f"    mov rcx, {RNG_STATE:#x}\n    mov r8, qword ptr [rcx]\n",
         epilogue=f"    mov rcx, {RNG_STATE:#x}\n    mov qword ptr [rcx], r8\n", seed=0x9E3779B97F4A7C15),
    Case("call_ret", "    call leaf\n", 20000),
    Case("lock_add", "    lock add qword ptr [rsi], 1\n", 20000, prologue="    mov rsi, 0x71000000\n"),
    Case("xchg_memory", "    xchg qword ptr [rsi], rax\n", 20000, prologue="    mov rsi, 0x71000000\n"),
    Case("lock_cmpxchg", "    lock cmpxchg qword ptr [rsi], rdx\n", 20000, prologue="    mov rsi, 0x71000000\n"),
    Case("mfence", "    mfence\n", 5000),
    Case("rep_movsb_4k", "    mov rsi, 0x71000000\n    mov rdi, 0x71002000\n    mov ecx, 4096\n    rep movsb\n", 2000),
    Case("bump_alloc", "    lea rdi, [rip + BUMP]\n    mov esi, 32\n    mov edx, 8\n    call BUMP_ALLOC\n", 1000,
         prologue="    lea rdi, [rip + BUMP]\n    lea rsi, [rip + REGION]\n    mov edx, 0x100000\n    call BUMP_INIT\n",
         uses_kernel=True),
    Case("linked_list_alloc", "    lea rdi, [rip + LL]\n    mov esi, 32\n    mov edx, 8\n    call LL_ALLOC\n", 1000,
         prologue="    lea rdi, [rip + LL]\n    lea rsi, [rip + REGION]\n    mov edx, 0x100000\n    call LL_INIT\n",
         uses_kernel=True),
    Case("linked_list_alloc_dealloc",
         "    lea rdi, [rip + LL]\n    mov esi, 32\n    mov edx, 8\n    call LL_ALLOC\n    lea rdi, [rip + LL]\n"
         "    mov rsi, rax\n    mov edx, 32\n    mov ecx, 8\n    call LL_DEALLOC\n", 1000,
         prologue="    lea rdi, [rip + LL]\n    lea rsi, [rip + REGION]\n    mov edx, 0x100000\n    call LL_INIT\n",
         uses_kernel=True),
    Case("linked_list_first_fit_walk", "    lea rdi, [rip + LL]\n    mov esi, 48\n    mov edx, 8\n    call LL_ALLOC\n", 300,
         prologue="    call fragment\n", uses_kernel=True),
]



def _at_line_offset(name: str, offset: int) -> str:
    """A prologue that puts the loop `offset` bytes into a 64-byte line (jumping over the padding)."""
    return f"    jmp .Lalign_{name}\n    .align 64\n.Lalign_{name}:\n" + "    nop\n" * offset


def _copy(n: int, kind: str = "movsb") -> str:
    source = "    mov rsi, 0x71000000\n" if kind == "movsb" else ""
    return source + f"    mov rdi, 0x71008000\n    mov ecx, {n}\n    rep {kind}\n"


# Calibration probes (`aeth-emu validate --probes`): the host measurements behind the figures
# that cycle_model.toml marks as measured. They are not validation cases; none is the same code.
_THREE_ADDS = "    add rax, 1\n    add rdx, 1\n    add rsi, 1\n"  # 12 bytes; with dec/jnz 17
PROBES = [
    Case("probe_jmp_taken", "    jmp .Lskip\n.Lskip:\n", 20000),
    Case("probe_call_jmp_back", "    lea rcx, [rip + .Lskip]\n    call leaf_jmp_back\n.Lskip:\n", 20000),
    Case("probe_call_nested", "    call leaf_call\n", 20000),
    Case("probe_adds_in_line", _THREE_ADDS, 20000, prologue=_at_line_offset("adds_in", 47)),
    Case("probe_adds_across_lines", _THREE_ADDS, 20000, prologue=_at_line_offset("adds_across", 48)),
    Case("probe_nops_in_line", "    nop\n" * 6, 20000, prologue=_at_line_offset("nops_in", 53)),
    Case("probe_nops_across_lines", "    nop\n" * 6, 20000, prologue=_at_line_offset("nops_across", 54)),
    *[Case(f"probe_rep_movsb_{n >> 10}k", _copy(n), 2000) for n in (1024, 2048, 8192, 16384)],
    *[Case(f"probe_rep_stosb_{n >> 10}k", _copy(n, "stosb"), 2000) for n in (1024, 16384)],
    Case("probe_tlb_l2_hit", "    mov rsi, qword ptr [rsi]\n" * 4, 5000, chain=_chase(128 * 4160, 4160)),
    Case("probe_tlb_walk", "    mov rsi, qword ptr [rsi]\n" * 4, 5000, chain=_chase(4096 * 4160, 4160)),
]

KERNEL_SYMBOLS = {
    "BUMP_INIT": "aetherion::allocator::bump::BumpAllocator::init",
    "BUMP_ALLOC": "aetherion::allocator::bump::BumpAllocator::alloc",
    "LL_INIT": "aetherion::allocator::linked_list::LinkedListAllocator::init",
    "LL_ALLOC": "aetherion::allocator::linked_list::LinkedListAllocator::alloc",
    "LL_DEALLOC": "aetherion::allocator::linked_list::LinkedListAllocator::dealloc",
}

# 32 free 32-byte blocks ahead of the big region: every 48-byte request walks past them.
FRAGMENT = """
fragment:
    push rbx
    lea rdi, [rip + LL]
    lea rsi, [rip + REGION]
    mov edx, 0x100000
    call LL_INIT
    xor ebx, ebx
.Ltake:
    lea rdi, [rip + LL]
    mov esi, 32
    mov edx, 8
    call LL_ALLOC
    mov rcx, 0x71000000
    mov qword ptr [rcx + rbx * 8], rax
    inc ebx
    cmp ebx, 64
    jne .Ltake
    xor ebx, ebx
.Lgive:
    lea rdi, [rip + LL]
    mov rcx, 0x71000000
    mov rsi, qword ptr [rcx + rbx * 8]
    mov edx, 32
    mov ecx, 8
    call LL_DEALLOC
    add ebx, 2
    cmp ebx, 64
    jb .Lgive
    pop rbx
    ret
"""


def case_source(cases: list[Case], kernel: dict[str, int]) -> str:
    lines = [".code64"]
    for name, value in kernel.items():
        lines.append(f".equ {name}, {value:#x}")
    for case in cases:
        lines += [f"case_{case.name}:", "    push rbx", "    mov rbx, rdi", "    xor eax, eax"]
        if case.chain:
            lines += ["    mov rsi, 0x71000000", "    mov rsi, qword ptr [rsi]"]
        lines += [case.prologue.rstrip("\n"), ".Lloop_" + case.name + ":"]
        lines += [b.replace(".Lskip", f".Lskip_{case.name}") for b in case.body.rstrip("\n").split("\n")]
        lines += ["    dec rbx", f"    jnz .Lloop_{case.name}", case.epilogue.rstrip("\n"), "    pop rbx", "    ret"]
    lines += ["leaf:", "    ret", "leaf_jmp_back:", "    add rsp, 8", "    jmp rcx", "leaf_call:", "    call leaf",
              "    ret", FRAGMENT, "return_here:", "    hlt"]
    return "\n".join(line for line in lines if line)


def chain_bytes(span: int, stride: int, seed: int = 1) -> tuple[bytes, int]:
    """A shuffled cyclic pointer chain over `span` bytes at DATA; returns (bytes, first node)."""
    count = span // stride
    order = list(range(count))
    random.Random(seed).shuffle(order)
    data = bytearray(span + 8)
    for a, b in zip(order, order[1:] + order[:1]):
        struct.pack_into("<Q", data, a * stride + 8, DATA + b * stride + 8)
    return bytes(data), DATA + order[0] * stride + 8


def kernel_addresses(image: KernelImage) -> dict[str, int]:
    """The kernel symbols the cases call and use; ImageError naming the first one missing."""
    sym = image.symbols
    wanted = {**KERNEL_SYMBOLS, "BUMP": "bench_bump", "LL": "bench_ll", "REGION": "bench_region"}
    missing = [path for path in (*wanted.values(), "__bss_start") if path not in sym]
    if missing:
        raise ImageError(f"{image.path}: no symbol {missing[0]!r}, which validate needs (it times the kernel's "
                         f"allocators{f'; {len(missing) - 1} more missing' if len(missing) > 1 else ''})")
    # Private allocator structs and a 1 MiB region in the kernel's own bss (bench.s's).
    found = {name: sym.address(path) for name, path in wanted.items()}
    if found["REGION"] < sym.address("__bss_start"):
        raise ImageError(f"{image.path}: bench_region is not in the kernel's bss, which validate needs it to be")
    return found


@dataclass(frozen=True)
class Result:
    name: str
    native: float
    model: float
    mca: float | None

    @property
    def error(self) -> float:
        return (self.model - self.native) / self.native

    @property
    def mca_error(self) -> float | None:
        return None if self.mca is None else (self.mca - self.native) / self.native


def _regions(image: KernelImage) -> list[tuple[int, int]]:
    low = min(s.vaddr for s in image.segments) & ~0xFFF
    high = (max(s.vaddr + s.memsz for s in image.segments) + 0xFFF) & ~0xFFF
    return [(low, high - low), (CODE, CODE_SIZE), (DATA, DATA_SIZE)]


def _case_writes(case: Case) -> list[tuple[int, bytearray]]:
    """What a case needs in DATA before it runs: its pointer chain, its generator's seed."""
    writes = []
    if case.chain:
        data, first = chain_bytes(*case.chain)
        data = bytearray(data)
        data[:8] = first.to_bytes(8, "little")
        writes.append((DATA, data))
    if case.seed is not None:
        writes.append((RNG_STATE, bytearray(case.seed.to_bytes(8, "little"))))
    return writes


def native_ticks(image: KernelImage, code: bytes, functions: list[int], cases: list[Case],
                 writes: list[list[tuple[int, bytearray]]], time_limit: float = DEFAULT_TIME_LIMIT) -> list[int]:
    """Each case's fewest TSC ticks over 15 calls, run in the sandbox (calibrate/sandbox.py) with
    the image's segments and `code` (at CODE) mapped; raises NativeRunFailed naming the case
    that made a system call, crashed or ran out of time."""
    setup = [(seg.vaddr, seg.data) for seg in image.segments if seg.data] + [(CODE, code)]
    native = [NativeCase(case.name, function, case.iterations, 15, case_writes)
              for case, function, case_writes in zip(cases, functions, writes)]
    return run_native(_regions(image), setup, native, time_limit)


class Model:
    def __init__(self, image: KernelImage, code: bytes, return_here: int) -> None:
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        for start, size in (*_regions(image), (STACK, STACK_SIZE)):
            self.uc.mem_map(start, size)
        for seg in image.segments:
            self.uc.mem_write(seg.vaddr, seg.data)
        self.uc.mem_write(CODE, code)
        self.return_here = return_here
        self.accounting = CycleAccounting(self.uc)
        self.accounting.attach()

    def write(self, address: int, data: bytes) -> None:
        self.uc.mem_write(address, data)

    def cycles(self, function: int, n: int) -> int:
        """The second of two calls: caches, TLB and predictor warm, as the native minimum is."""
        spent = 0
        for _ in range(2):
            rsp = STACK + STACK_SIZE - 64
            self.uc.mem_write(rsp, self.return_here.to_bytes(8, "little"))
            self.uc.reg_write(x86.UC_X86_REG_RSP, rsp)
            self.uc.reg_write(x86.UC_X86_REG_RDI, n)
            before = self.accounting.cycles
            self.uc.emu_start(function, self.return_here)
            self.accounting.finish(self.return_here)
            spent = self.accounting.cycles - before
        return spent


def llvm_mca(case: Case, kernel: dict[str, int]) -> float | None:
    """Cycles llvm-mca predicts for the loop (body + counter) run `iterations` times."""
    tool = shutil.which("llvm-mca")
    if tool is None or case.uses_kernel or "call" in case.body:
        return None  # llvm-mca cannot follow calls into other code
    body = case.body.replace(".Lskip", "Lskip")
    text = ".intel_syntax noprefix\n" + body + "    dec rbx\n    jnz Lloop\nLloop:\n"
    done = subprocess.run([tool, "-mcpu=znver3", f"-iterations={case.iterations}", "-x86-asm-syntax=intel"],
                          input=text, capture_output=True, text=True, timeout=60)
    m = re.search(r"Total Cycles:\s+(\d+)", done.stdout)
    return float(m.group(1)) if m else None


def kendall_tau(xs: list[float], ys: list[float]) -> float:
    concordant = discordant = 0
    for i in range(len(xs)):
        for j in range(i + 1, len(xs)):
            s = (xs[i] - xs[j]) * (ys[i] - ys[j])
            concordant += s > 0
            discordant += s < 0
    pairs = len(xs) * (len(xs) - 1) / 2
    return (concordant - discordant) / pairs if pairs else 0.0


def mape(errors: list[float]) -> float:
    return 100 * sum(abs(e) for e in errors) / len(errors)


def check_trusted(image: KernelImage, native_untrusted: bool = False) -> None:
    """Refuse (UsageError) to run an image's code natively unless it is the kernel shipped with
    aeth-emu or the caller insists."""
    if native_untrusted:
        return
    shipped = load_image(bundled_kernel(), 4096 << 20).sha256
    if image.sha256 != shipped:
        raise UsageError(f"{image.path}: not the kernel shipped with aeth-emu (its SHA-256 differs), and validate "
                         "runs the image's code natively on this host; pass --native-untrusted to run it anyway "
                         "(in the sandbox)")


def _measure(image_path: str | Path, cases: list[Case], native_untrusted: bool = False,
             time_limit: float = DEFAULT_TIME_LIMIT) -> tuple[float, list[tuple[Case, float, int]], dict[str, int]]:
    """(TSC ticks per core cycle, [(case, native core cycles, model cycles)], kernel addresses).
    Host signals are held while it runs (a Ctrl-C inside the model's decode callback could not be
    handled there) and end it between cases with KeyboardInterrupt."""
    received: list[str] = []
    with StopOnSignals(received.append, STOP_SIGNALS):
        return _measure_cases(image_path, cases, native_untrusted, time_limit, received)


def _measure_cases(image_path, cases, native_untrusted, time_limit, received):
    image = load_image(image_path, 4096 << 20)
    check_trusted(image, native_untrusted)
    kernel = kernel_addresses(image)
    calibration = CASES[0]  # alu_dependent: one cycle per dependent add
    everything = cases if calibration in cases else [calibration, *cases]
    flat = assemble_flat([("validate.s", case_source(everything, kernel))], CODE, CODE_SIZE, default_mode=64)
    functions = [flat.symbols[f"case_{case.name}"] for case in everything]
    writes = [_case_writes(case) for case in everything]
    # The native side first, all cases in one sandboxed child: a case that fails it fails fast.
    ticks = native_ticks(image, flat.data, functions, everything, writes, time_limit)
    model = Model(image, flat.data, flat.symbols["return_here"])
    rows = []
    for case, function, case_writes, case_ticks in zip(everything, functions, writes, ticks):
        if received:
            raise KeyboardInterrupt
        for address, data in case_writes:
            model.write(address, bytes(data))
        rows.append((case, case_ticks, model.cycles(function, case.iterations)))
    ticks_per_cycle = ticks[everything.index(calibration)] / (8 * calibration.iterations)
    return ticks_per_cycle, [(case, ticks / ticks_per_cycle, cycles) for case, ticks, cycles in rows
                             if case in cases], kernel


def probes(image_path: str | Path, native_untrusted: bool = False, time_limit: float = DEFAULT_TIME_LIMIT) -> dict:
    """The calibration probes: native and model cycles per loop iteration."""
    ticks_per_cycle, rows, _ = _measure(image_path, PROBES, native_untrusted, time_limit)
    return {"ticks_per_core_cycle": ticks_per_cycle,
            "probes": [{"probe": case.name, "native_cycles_per_iteration": round(native / case.iterations, 2),
                        "model_cycles_per_iteration": round(cycles / case.iterations, 2)}
                       for case, native, cycles in rows]}


def validate(image_path: str | Path, native_untrusted: bool = False, time_limit: float = DEFAULT_TIME_LIMIT) -> dict:
    """Every case natively (sandboxed, at most `time_limit` seconds) and in the model; the
    report `aeth-emu validate` prints."""
    ticks_per_cycle, rows, kernel = _measure(image_path, CASES, native_untrusted, time_limit)
    results = [Result(case.name, native, float(cycles), llvm_mca(case, kernel)) for case, native, cycles in rows]
    with_mca = [r for r in results if r.mca is not None]
    return {
        "ticks_per_core_cycle": ticks_per_cycle,
        "cases": [{"case": r.name, "native_cycles": round(r.native), "model_cycles": round(r.model),
                   "model_error_percent": round(100 * r.error, 1),
                   "llvm_mca_cycles": None if r.mca is None else round(r.mca),
                   "llvm_mca_error_percent": None if r.mca_error is None else round(100 * r.mca_error, 1)}
                  for r in results],
        "model": {"cases": len(results), "mape_percent": round(mape([r.error for r in results]), 1),
                  "kendall_tau": round(kendall_tau([r.native for r in results], [r.model for r in results]), 3)},
        "model_on_llvm_mca_cases": {
            "cases": len(with_mca), "mape_percent": round(mape([r.error for r in with_mca]), 1),
            "kendall_tau": round(kendall_tau([r.native for r in with_mca], [r.model for r in with_mca]), 3)},
        "llvm_mca": {
            "cases": len(with_mca), "mape_percent": round(mape([r.mca_error for r in with_mca]), 1),
            "kendall_tau": round(kendall_tau([r.native for r in with_mca], [r.mca for r in with_mca]), 3)},
    }
