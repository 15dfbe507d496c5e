"""The toolchain: keystone defects caught by the round trip, a standard ELF, determinism."""

from __future__ import annotations

import io
import shutil
import subprocess

import pytest
import rust_demangler
from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from elftools.elf.elffile import ELFFile

from emulator.toolchain.build import assemble_flat, assemble_kernel
from emulator.toolchain.dialect import AssemblyError
from emulator.toolchain.rustnames import mangle
from tests.support.guest import long_mode_kernel
from tests.support.qemu import SUCCESS_STATUS, run_qemu

pytestmark = pytest.mark.unit


def kernel(body: str) -> bytes:
    return assemble_kernel([("k.s", ".section text\nstart:\n" + body + "\n")]).elf


@pytest.mark.parametrize("line, message", [
    ("mov rbx, qword ptr [0x100000]", "assembled RIP-relative by keystone"),
    (".code32\n    ljmp 0x08:0x8000", "operand-size prefix (0x66) to 'ljmp'"),
    (".code32\n    lgdt [0x6000]", "operand-size prefix (0x66) to 'lgdt'"),
])
def test_round_trip_rejects_keystone_misassembly_naming_the_line(line, message):
    with pytest.raises(AssemblyError) as err:
        kernel("    nop\n    " + line)
    text = str(err.value)
    assert message in text
    assert text.startswith(f"k.s:{4 + line.count(chr(10))}:")


def test_relative_targets_decode_to_the_symbol_not_keystones_off_by_four():
    image = assemble_kernel([("k.s", """
.section text
start:
    jmp target
    call target
    lea rax, [rip + datum]
    mov rbx, qword ptr [rip + datum + 8]
target:
    ret
.section data
datum: .quad 1, 2
""")])
    elf = ELFFile(io.BytesIO(image.elf))
    text = elf.get_section_by_name(".text")
    insns = list(Cs(CS_ARCH_X86, CS_MODE_64).disasm(text.data(), text["sh_addr"]))
    target, datum = image.symbols["target"], image.symbols["datum"]
    assert insns[0].op_str == hex(target) and insns[1].op_str == hex(target)
    assert insns[2].op_str == f"rax, [rip + {hex(datum - insns[3].address)}]"
    assert insns[3].op_str == f"rbx, qword ptr [rip + {hex(datum + 8 - insns[4].address)}]"


def test_errors_name_file_and_line():
    cases = {
        "    mov rax, nowhere": "k.s:3: undefined symbol 'nowhere'",
        "    frobnicate rax": "k.s:3: keystone cannot assemble",
        "    .bogus 1": "k.s:3: unknown directive .bogus",
        "start:": "k.s:3: label 'start' already defined at k.s:2",
        "    .byte 300": "k.s:3: value 0x12c does not fit in 1 bytes",
        "    mov rax, (1 + ": "k.s:3: expression",
    }
    for body, message in cases.items():
        with pytest.raises(AssemblyError) as err:
            kernel(body)
        assert str(err.value).startswith(message), str(err.value)


def test_elf_is_standard_with_pvh_note_segments_and_rust_symbols():
    image = assemble_kernel([("k.s", long_mode_kernel("""
.function main, aetherion::allocator::bump::BumpAllocator::alloc
main:
    ret
.endfunction
.function __rust_alloc
__rust_alloc:
    xor eax, eax
    ret
.endfunction
.section data
.object counter, aetherion::COUNTER
counter: .quad 0
.endobject
"""))])
    elf = ELFFile(io.BytesIO(image.elf))
    assert (elf.header.e_type, elf.header.e_machine, elf.header.e_entry) == ("ET_EXEC", "EM_X86_64", image.entry)
    loads = [(s.header.p_vaddr, s.header.p_flags) for s in elf.iter_segments() if s.header.p_type == "PT_LOAD"]
    assert [flags for _, flags in loads] == [5, 4, 6]  # R-X text, R rodata, RW data+bss
    assert all(vaddr % 0x1000 == 0 for vaddr, _ in loads) and loads[0][0] == 0x0220_0000
    note = next(s for s in elf.iter_segments() if s.header.p_type == "PT_NOTE")
    assert note.header.p_align == 4
    (n,) = list(note.iter_notes())
    assert n["n_name"] == "Xen" and n["n_type"] == 18 and int.from_bytes(n["n_descdata"], "little") == image.entry
    symbols = {s.name: s for s in elf.get_section_by_name(".symtab").iter_symbols()}
    mangled = mangle("aetherion::allocator::bump::BumpAllocator::alloc")
    assert symbols[mangled]["st_info"]["type"] == "STT_FUNC" and symbols[mangled]["st_size"] == 1
    assert rust_demangler.demangle(mangled).startswith("aetherion::allocator::bump::BumpAllocator::alloc::h")
    assert symbols["__rust_alloc"]["st_size"] == 3
    assert symbols[mangle("aetherion::COUNTER")]["st_info"]["type"] == "STT_OBJECT"


def test_readelf_and_objdump_accept_the_image(tmp_path):
    if not (shutil.which("readelf") and shutil.which("objdump")):
        pytest.skip("binutils not installed")
    path = tmp_path / "k.elf"
    path.write_bytes(assemble_kernel([("k.s", long_mode_kernel(".function main, t::main\nmain:\n    ret\n.endfunction\n"))]).elf)
    readelf = subprocess.run(["readelf", "-a", "-W", str(path)], capture_output=True, text=True)
    assert readelf.returncode == 0 and "Warning" not in readelf.stderr and "Error" not in readelf.stderr
    objdump = subprocess.run(["objdump", "-d", "-M", "intel", str(path)], capture_output=True, text=True)
    assert objdump.returncode == 0 and "<_ZN1t4main" in objdump.stdout


@pytest.mark.qemu
def test_qemu_boots_a_toolchain_kernel(tmp_path):
    path = tmp_path / "k.elf"
    path.write_bytes(assemble_kernel([("k.s", """
.code32
.section text
.pvh_entry start
start:
    mov dx, 0x3F8
    mov esi, message
.Lnext:
    mov al, byte ptr [esi]
    test al, al
    jz .Ldone
    out dx, al
    inc esi
    jmp .Lnext
.Ldone:
    mov eax, 0x10
    out 0xF4, eax
    hlt
.section rodata
message: .asciz "hi\\n"
""")]).elf)
    run = run_qemu(path, "")
    assert run.serial == b"hi\n" and run.status == SUCCESS_STATUS


def test_same_sources_give_identical_bytes():
    source = [("k.s", long_mode_kernel(".function main, t::main\nmain:\n    ret\n.endfunction\n"))]
    assert assemble_kernel(source).elf == assemble_kernel(source).elf


def test_flat_image_org_fill_and_sixteen_bit_far_jump():
    rom = assemble_flat([("bios.s", """
.code16
start:
    cli
    hlt
.org 0xFFFF0
reset:
    ljmp 0xF000:0x0000
""")], base=0xF0000, size=0x10000)
    assert len(rom.data) == 0x10000
    assert rom.data[:2] == b"\xfa\xf4" and rom.data[2:0xFFF0] == b"\xff" * (0xFFF0 - 2)
    assert rom.data[0xFFF0:0xFFF5] == bytes.fromhex("ea0000 00f0".replace(" ", ""))
    assert rom.symbols["reset"] == 0xFFFF0


def test_many_short_forward_jumps_settle_quickly_as_two_byte_jumps():
    # Each pass used to fix only ~40 of these (stale forward labels looked too far away).
    body = "".join(f"    jmp .Ln{i}\n.Ln{i}:\n    add rax, {i}\n" for i in range(1000))
    image = assemble_kernel([("k.s", ".section text\nstart:\n" + body + "    ret\n")])
    text = ELFFile(io.BytesIO(image.elf)).get_section_by_name(".text").data()
    assert text[:2] == bytes([0xEB, 0x00])  # jmp +0 to the next line
    insns = list(Cs(CS_ARCH_X86, CS_MODE_64).disasm(text, 0x0220_0000))
    assert sum(i.mnemonic == "jmp" and i.size == 2 for i in insns) == 1000


# -- structures ---------------------------------------------------------------------------

STRUCTS = """
.struct LockedThing
    lock: .quad
    kind: .long
    .align 8
    inner: Bump | List                          ; a union: as large as the larger
    tag: .byte 3
.endstruct
.struct List
    head: Node                                  ; an embedded struct, defined after its use
.endstruct
.struct Node
    size: .quad
    next: .quad
.endstruct
.struct Bump
    start: .quad
    end: .quad
    next: .quad
    bitmap: .zero 8 * WORDS
.endstruct
.equ WORDS, 2
"""


def test_struct_fields_offsets_sizes_and_nested_names():
    image = assemble_kernel([("k.s", STRUCTS + """
.section text
start:
    mov rax, qword ptr [rdi + LockedThing.inner.next]
    mov rax, qword ptr [rdi + LockedThing.inner.head.next]
    add rdi, Node.SIZE
.section bss
thing: .zero LockedThing.SIZE
after:
""")])
    c = image.constants
    assert (c["Node.size"], c["Node.next"], c["Node.SIZE"]) == (0, 8, 16)
    assert (c["Bump.bitmap"], c["Bump.SIZE"], c["List.head.next"], c["List.SIZE"]) == (24, 40, 8, 16)
    assert (c["LockedThing.lock"], c["LockedThing.kind"], c["LockedThing.inner"]) == (0, 8, 16)
    inner = [c[f"LockedThing.inner.{name}"] for name in ("next", "head.next", "bitmap")]
    assert inner == [16 + 16, 16 + 8, 16 + 24]
    assert (c["LockedThing.tag"], c["LockedThing.SIZE"]) == (16 + 40, 16 + 40 + 3)
    assert image.symbols["after"] - image.symbols["thing"] == 59
    text = ELFFile(io.BytesIO(image.elf)).get_section_by_name(".text").data()
    insns = [f"{i.mnemonic} {i.op_str}" for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(text, 0)]
    assert insns == ["mov rax, qword ptr [rdi + 0x20]", "mov rax, qword ptr [rdi + 0x18]", "add rdi, 0x10"]


def test_struct_constants_stay_out_of_the_symbol_table():
    image = assemble_kernel([("k.s", STRUCTS + ".section text\nstart:\n    ret\n")])
    names = {s.name for s in ELFFile(io.BytesIO(image.elf)).get_section_by_name(".symtab").iter_symbols()}
    assert "start" in names and not any(name.startswith(("Node.", "LockedThing.")) for name in names)


# -- macros -------------------------------------------------------------------------------

def test_macro_arguments_defaults_unique_labels_and_the_invoking_line():
    uses = """
.section text
start:
    count_down rcx, 3
again: count_down rdx
    ret
"""
    macros = """
; count_down REG[, FROM]: REG = FROM, then loop down to zero
.macro count_down reg, from=2
    mov \\reg, \\from
.Lloop\\@:
    .srcloc .Lwhere\\@
    dec \\reg
    jnz .Lloop\\@
.endm
"""
    image = assemble_kernel([("a.s", uses), ("b.s", macros)])  # used in a file before the one defining it
    text = ELFFile(io.BytesIO(image.elf)).get_section_by_name(".text").data()
    insns = list(Cs(CS_ARCH_X86, CS_MODE_64).disasm(text, 0x0220_0000))
    shown = [f"{i.mnemonic} {i.op_str}".strip() for i in insns]
    first, second = insns[1].address, insns[4].address  # each expansion's own .Lloop
    assert shown == ["mov rcx, 3", "dec rcx", f"jne {hex(first)}", "mov rdx, 2", "dec rdx", f"jne {hex(second)}", "ret"]
    assert image.symbols["again"] == insns[3].address  # a label on the invoking line: the expansion's start
    rodata = ELFFile(io.BytesIO(image.elf)).get_section_by_name(".rodata").data()
    assert rodata.split(b"\0")[:2] == [b"a.s:4:5", b"a.s:5:5"]  # .srcloc in a macro names the invoking line


def test_macro_parameters_are_not_replaced_inside_strings_and_concatenate_with_a_separator():
    image = assemble_kernel([("k.s", r"""
.macro named tag, text
.section rodata
\tag\()_text: .asciz "\tag\n"
\tag\()_arg: .asciz \text
.endm
.section text
start:
    ret
named greeting, "hi"
""")])
    rodata = ELFFile(io.BytesIO(image.elf)).get_section_by_name(".rodata").data()
    assert rodata.startswith(b"\tag\n\0hi\0")  # "\tag\n" kept its escapes: a tab, then "ag"
    assert image.symbols["greeting_arg"] - image.symbols["greeting_text"] == 5


def test_a_local_constant_belongs_to_its_function():
    image = assemble_kernel([("k.s", """
.section text
.function f, t::f
f:
.equ .Lslot, -8
    mov rax, qword ptr [rbp + .Lslot]
.endfunction
.function g, t::g
g:
.equ .Lslot, -16
    mov rax, qword ptr [rbp + .Lslot]
.endfunction
""")])
    text = ELFFile(io.BytesIO(image.elf)).get_section_by_name(".text").data()
    shown = [i.op_str for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(text, 0)]
    assert shown == ["rax, qword ptr [rbp - 8]", "rax, qword ptr [rbp - 0x10]"]


MACRO_M = ".macro m a, b=1\n    mov \\a, \\b\n.endm\n"


@pytest.mark.parametrize("source, message", [
    (".struct A\n    x: .quad\n.endstruct\n.section text\nstart:\n    mov rax, A.y\n",
     "k.s:6: struct A has no field 'y' (it has x, SIZE)"),
    (".section text\nstart:\n    ret\n.struct A\n    x: .quad\n", "k.s:4: .struct A is never ended (no .endstruct)"),
    (".struct A\n    x: Missing\n.endstruct\n", "k.s:2: field x: unknown struct type 'Missing'"),
    (".struct A\n    x: B\n.endstruct\n.struct B\n    y: A\n.endstruct\n",
     "k.s:1: struct A depends on its own size (A -> B -> A)"),
    (".struct A\n    SIZE: .quad\n.endstruct\n", "k.s:2: a field cannot be named SIZE"),
    (".struct A\n    x: .quad\n    x: .long\n.endstruct\n", "k.s:3: field 'x' of A already defined at k.s:2"),
    (".struct A\n    x:\n.endstruct\n", "k.s:2: field x of A needs a type"),
    (".struct A\n    .struct B\n", "k.s:2: .struct inside .struct A"),
    (".endstruct\n", "k.s:1: .endstruct without .struct"),
    (".section text\nstart:\n.macro m a\n    nop\n", "k.s:3: .macro m is never ended (no .endm)"),
    (".endm\n", "k.s:1: .endm without .macro"),
    (MACRO_M + ".section text\nstart:\n    m\n", "k.s:6: macro m takes 1 to 2 arguments (a, b), got 0"),
    (MACRO_M + ".section text\nstart:\n    m rax, 1, 2\n", "k.s:6: macro m takes 1 to 2 arguments (a, b), got 3"),
    (".macro m a\n    mov \\b, 1\n.endm\n", "k.s:2: macro m has no parameter \\b"),
    (".macro push a\n.endm\n", "k.s:1: macro name 'push' is an x86 mnemonic"),
    (MACRO_M + MACRO_M, "k.s:4: macro m already defined at k.s:1"),
    (MACRO_M + ".section text\nstart:\n    m rax, nowhere\n",
     "k.s:6: undefined symbol 'nowhere' (in macro m at k.s:2)"),
    (".macro m\n    m\n.endm\n.section text\nstart:\n    m\n", "k.s:6: macro expansions nested deeper than 64"),
])
def test_struct_and_macro_misuse_names_file_and_line(source, message):
    with pytest.raises(AssemblyError) as err:
        assemble_kernel([("k.s", source)])
    assert str(err.value).startswith(message), str(err.value)
