/* Boot sector for the VNC benchmark: sets a 640x480x32 Bochs DISPI mode and paints the same
 * pattern as vnc/examples/vnc_bench.rs through the banked 0xA0000 window, then toggles a
 * 16x16 block at (64, 8) about twice a second so clients see small updates.
 * Pixel (x, y) = red x&255, green y&255, blue 255 when ((x>>5)^(y>>5))&1. */
    .code16
    .globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %ss
    mov $0x7c00, %sp
    /* DISPI: disable, 640x480x32, bank 0, enable */
    mov $4, %bx; xor %cx, %cx; call dispi
    mov $1, %bx; mov $640, %cx; call dispi
    mov $2, %bx; mov $480, %cx; call dispi
    mov $3, %bx; mov $32, %cx; call dispi
    mov $4, %bx; mov $1, %cx; call dispi
    mov $0xa000, %ax
    mov %ax, %es
    xor %di, %di            /* offset in bank */
    xor %si, %si            /* bank */
    xor %ebp, %ebp          /* y */
row:
    xor %edx, %edx          /* x */
px:
    /* eax = pixel */
    mov %edx, %eax
    and $0xff, %eax
    shl $16, %eax
    mov %ebp, %ecx
    and $0xff, %ecx
    shl $8, %ecx
    or %ecx, %eax
    mov %edx, %ecx
    shr $5, %ecx
    mov %ebp, %ebx
    shr $5, %ebx
    xor %ebx, %ecx
    test $1, %cl
    jz 1f
    or $0xff, %eax
1:  mov %eax, %es:(%di)
    add $4, %di
    jnz 2f
    inc %si                 /* crossed 64 KiB: next bank */
    mov $5, %bx
    mov %si, %cx
    call dispi
2:  inc %edx
    cmp $640, %edx
    jb px
    inc %ebp
    cmp $480, %ebp
    jb row
    /* Back to bank 0 for the toggling block. */
    mov $5, %bx; xor %cx, %cx; call dispi
    xor %eax, %eax
toggle:
    not %eax
    and $0x00ffffff, %eax
    mov $8, %bx             /* y */
3:  mov %bx, %di
    imul $2560, %di, %di    /* y * 640 * 4 (fits bank 0 for y < 25) */
    add $256, %di           /* x = 64 */
    mov $16, %cx
4:  mov %eax, %es:(%di)
    add $4, %di
    loop 4b
    inc %bx
    cmp $24, %bx
    jb 3b
    /* Delay. */
    mov $0x0400, %ecx
5:  push %ecx
    mov $0x4000, %ecx
6:  loop 6b
    pop %ecx
    loop 5b
    jmp toggle

/* Write cx to DISPI register bx. */
dispi:
    push %edx
    mov $0x1ce, %dx
    mov %bx, %ax
    out %ax, %dx
    mov $0x1cf, %dx
    mov %cx, %ax
    out %ax, %dx
    pop %edx
    ret

    .org 510
    .byte 0x55, 0xaa
