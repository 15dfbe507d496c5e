; Aetherion BIOS: power-on self test and the Xen PVH hand-off (docs/boot-protocol.md).
;
; Runs from the 64 KiB ROM at 0xF0000 in real mode. Labels are linear addresses, so real-mode
; references into the ROM go through CS (= 0xF000) as `label - ROM`. It never writes to the
; UART's transmit register: serial output belongs to the kernel alone, as on QEMU.

.code16
.equ ROM, 0xF0000
.equ BOOT_PARAMS, 0x6000
.equ BOOT_MAGIC, 0x50424541
.equ BOOT_VERSION, 1
.equ BOOT_HAS_CMDLINE, 1                        ; BootParams.flags bit 0
.equ START_INFO, 0x7000
.equ START_INFO_MAGIC, 0x336ec578
.equ MEMMAP, 0x7040
.equ MEMMAP_ENTRIES, 4
.equ RAM_ENTRY, 3                               ; the memory map's entry for the RAM above 1 MiB
.equ CMDLINE, 0x7100
.equ CMDLINE_MAX, 3839
.equ COM1, 0x3F8
; The 16550 UART's registers, as offsets from its base port
.equ UART_DATA, 0                               ; with LCR.DLAB set: the divisor's low byte
.equ UART_IER, 1                                ; interrupt enable; with DLAB: the divisor's high byte
.equ UART_FCR, 2                                ; FIFO control
.equ UART_LCR, 3                                ; line control
.equ UART_MCR, 4                                ; modem control
.equ UART_LSR, 5                                ; line status

; The boot parameter block the emulator's loader writes at BOOT_PARAMS
.struct BootParams
    magic: .long                                ; BOOT_MAGIC, "AEBP"
    version: .long
    entry: .long                                ; the kernel's PVH entry (physical)
    flags: .long
    ram_size: .quad                             ; bytes
    cmdline_len: .long                          ; bytes, without the NUL
    reserved: .long
.endstruct                                      ; the command line follows: BootParams.SIZE

; Xen's hvm_start_info, version 1, which the firmware builds at START_INFO for the kernel
.struct HvmStartInfo
    magic: .long
    version: .long
    flags: .long
    nr_modules: .long
    modlist_paddr: .quad
    cmdline_paddr: .quad
    rsdp_paddr: .quad
    memmap_paddr: .quad
    memmap_entries: .long
    reserved: .long
.endstruct

; One entry of its memory map, at MEMMAP
.struct HvmMemmapEntry
    addr: .quad
    size: .quad
    type: .long                                 ; 1 RAM, 2 reserved
    reserved: .long
.endstruct

post:                               ; F000:0000, where the reset vector jumps
    cli
    cld
    xor ax, ax
    mov ss, ax
    mov sp, BOOT_PARAMS             ; a small stack in free low memory, below the boot block
    mov ds, ax
    mov es, ax
    mov al, 0x01
    out 0x80, al

    ; Interrupt vector table: every vector to an `iret`, so a stray real-mode interrupt returns.
    xor di, di
    mov cx, 256
.Livt:
    mov ax, default_handler - ROM
    stosw
    mov ax, 0xF000
    stosw
    loop .Livt
    mov al, 0x10
    out 0x80, al

    ; The interrupt controllers as a BIOS sets them up: the master's IRQs at vectors 0x08-0x0F, the
    ; slave's at 0x70-0x77 on the master's IRQ2, and every line masked: the kernel takes them over.
    mov al, 0x11                    ; ICW1: edge-triggered, cascade, ICW4 follows
    out 0x20, al
    out 0xA0, al
    mov al, 0x08                    ; ICW2: vector bases
    out 0x21, al
    mov al, 0x70
    out 0xA1, al
    mov al, 0x04                    ; ICW3: the slave on IRQ2
    out 0x21, al
    mov al, 0x02
    out 0xA1, al
    mov al, 0x01                    ; ICW4: 8086 mode
    out 0x21, al
    out 0xA1, al
    mov al, 0xFF                    ; OCW1: all masked
    out 0x21, al
    out 0xA1, al

    ; BIOS data area and the extended BIOS data area.
    mov word ptr [0x400], COM1
    mov word ptr [0x40E], 0x9FC0
    mov word ptr [0x413], 639
    mov byte ptr [0x449], 3
    mov ax, 0x9FC0
    mov es, ax
    mov word ptr es:[0], 1          ; EBDA size in KiB
    xor ax, ax
    mov es, ax
    mov al, 0x11
    out 0x80, al

    ; COM1 at 115200 8N1 through the divisor latch (divisor 1); FIFOs on, DTR/RTS/OUT2 set.
    mov dx, COM1 + UART_LCR
    mov al, 0x80
    out dx, al
    mov dx, COM1 + UART_DATA
    mov al, 1
    out dx, al
    mov dx, COM1 + UART_IER
    xor al, al
    out dx, al
    mov dx, COM1 + UART_LCR
    mov al, 0x03
    out dx, al
    mov dx, COM1 + UART_FCR
    mov al, 0xC7
    out dx, al
    mov dx, COM1 + UART_MCR
    mov al, 0x0B
    out dx, al
    mov dx, COM1 + UART_IER
    xor al, al
    out dx, al
    mov al, 0x12
    out 0x80, al

    ; VGA text screen: blank cells, then the banner on row 0.
    mov ax, 0xB800
    mov es, ax
    xor di, di
    mov ax, 0x0720
    mov cx, 2000
    rep stosw
    xor di, di
    mov si, banner - ROM
    mov ah, 0x0F
.Lbanner:
    mov al, byte ptr cs:[si]
    test al, al
    jz .Lbanner_done
    stosw
    inc si
    jmp .Lbanner
.Lbanner_done:
    xor ax, ax
    mov es, ax
    mov al, 0x13
    out 0x80, al

    ; A20 through the fast gate (system control port A): set bit 1, never bit 0 (reset).
    in al, 0x92
    or al, 2
    and al, 0xFE
    out 0x92, al
    mov al, 0x14
    out 0x80, al

    ; The boot parameter block the emulator's loader wrote.
    cmp dword ptr [BOOT_PARAMS + BootParams.magic], BOOT_MAGIC
    jne bad_block
    cmp dword ptr [BOOT_PARAMS + BootParams.version], BOOT_VERSION
    jne bad_block
    mov al, 0x20
    out 0x80, al

    ; E820 memory map: copy the template from ROM, then the size of RAM above 1 MiB.
    mov ax, 0xF000
    mov ds, ax
    mov si, memmap_template - ROM
    mov di, MEMMAP
    mov cx, MEMMAP_ENTRIES * HvmMemmapEntry.SIZE
    rep movsb
    xor ax, ax
    mov ds, ax
    mov eax, dword ptr [BOOT_PARAMS + BootParams.ram_size]         ; low half
    mov edx, dword ptr [BOOT_PARAMS + BootParams.ram_size + 4]     ; high half
    sub eax, 0x100000
    sbb edx, 0
    mov dword ptr [MEMMAP + RAM_ENTRY * HvmMemmapEntry.SIZE + HvmMemmapEntry.size], eax
    mov dword ptr [MEMMAP + RAM_ENTRY * HvmMemmapEntry.SIZE + HvmMemmapEntry.size + 4], edx
    mov al, 0x21
    out 0x80, al

    ; hvm_start_info, version 1: zeroed, then the fields.
    mov di, START_INFO
    mov cx, HvmStartInfo.SIZE
    xor al, al
    rep stosb
    mov dword ptr [START_INFO + HvmStartInfo.magic], START_INFO_MAGIC
    mov dword ptr [START_INFO + HvmStartInfo.version], 1
    mov dword ptr [START_INFO + HvmStartInfo.memmap_paddr], MEMMAP
    mov dword ptr [START_INFO + HvmStartInfo.memmap_entries], MEMMAP_ENTRIES
    test byte ptr [BOOT_PARAMS + BootParams.flags], BOOT_HAS_CMDLINE
    jz .Lno_cmdline
    mov ecx, dword ptr [BOOT_PARAMS + BootParams.cmdline_len]  ; all 32 bits, so a huge one is capped too
    cmp ecx, CMDLINE_MAX
    jbe .Lcopy_cmdline
    mov ecx, CMDLINE_MAX
.Lcopy_cmdline:
    mov si, BOOT_PARAMS + BootParams.SIZE
    mov di, CMDLINE
    rep movsb
    mov byte ptr [di], 0
    mov dword ptr [START_INFO + HvmStartInfo.cmdline_paddr], CMDLINE
.Lno_cmdline:
    mov al, 0x22
    out 0x80, al

    ; Flat GDT, protected mode with CR0 exactly PE|ET, then 32-bit code.
    lgdt cs:[gdt_pointer - ROM]
    mov al, 0x30
    out 0x80, al
    mov eax, 0x11
    mov cr0, eax
    ; ljmp 0x08:protected, with a 32-bit offset (66 EA off32 sel16): keystone cannot encode it.
    .byte 0x66, 0xEA
    .long protected
    .word 0x08

bad_block:
    mov al, 0xE1
    out 0x80, al
.Lhang:
    cli
    hlt
    jmp .Lhang

default_handler:
    iret

.code32
protected:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    xor eax, eax
    xor ecx, ecx
    xor edx, edx
    xor esi, esi
    xor edi, edi
    xor ebp, ebp
    xor esp, esp
    mov ebx, START_INFO
    jmp dword ptr [BOOT_PARAMS + BootParams.entry]

banner:
    .asciz "Aetherion BIOS"

.align 8
gdt:
    .quad 0
    .quad 0x00CF9B000000FFFF        ; 0x08: flat 32-bit code; Accessed preset, the GDT is in ROM
    .quad 0x00CF93000000FFFF        ; 0x10: flat 32-bit data; Accessed preset
gdt_pointer:
    .word 23
    .long gdt

memmap_template:                    ; HvmMemmapEntry records
    .quad 0, 0x9FC00
    .long 1, 0
    .quad 0x9FC00, 0x400
    .long 2, 0
    .quad 0xF0000, 0x10000
    .long 2, 0
    .quad 0x100000, 0               ; entry RAM_ENTRY: its size filled in from the boot block
    .long 1, 0

.org 0xFFFF0
reset:
    ; ljmp 0xF000:0x0000, as bytes: keystone sometimes adds a 0x66 prefix to it here
    .byte 0xEA
    .word 0x0000, 0xF000
