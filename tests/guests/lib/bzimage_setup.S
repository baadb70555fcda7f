/* The real-mode part of a bzImage: boot sector, setup header (Documentation/arch/x86/boot.rst,
 * protocol 2.15) and a small real-mode setup. rvmm ignores the setup code and uses the 64-bit
 * entry; QEMU's -kernel loader runs it (at setup segment + 0x20 : 0), so it does what Linux's
 * setup does for the loader: build boot_params (header copy + BIOS e820), enter protected mode
 * and jump to code32_start with ESI = boot_params. */
#define SETUP_SECTS 7
#define BP_BUF 0x2000 /* boot_params, offset in the setup segment */
#define STACK_TOP 0x1ff0

	.section .setup, "ax"
	.code16
	.globl _setup_start
_setup_start:
	.org 0x1f1
	.byte SETUP_SECTS
	.word 0          /* root_flags */
	.long syssize    /* from the linker script */
	.word 0          /* ram_size */
	.word 0xffff     /* vid_mode: normal */
	.word 0          /* root_dev */
	.word 0xaa55     /* boot_flag */
	.org 0x200
	.byte 0xeb, start_of_setup - 1f /* jump over the header */
1:	.ascii "HdrS"
	.word 0x020f     /* protocol 2.15 */
	.long 0          /* realmode_swtch */
	.word 0          /* start_sys_seg */
	.word kernel_version - _setup_start - 0x200
	.byte 0          /* type_of_loader: the loader fills it */
	.byte 0x01       /* loadflags: LOADED_HIGH */
	.word 0          /* setup_move_size */
	.org 0x214
	.long kernel_base /* code32_start (linker script) */
	.long 0          /* ramdisk_image */
	.long 0          /* ramdisk_size */
	.long 0          /* bootsect_kludge */
	.word 0          /* heap_end_ptr */
	.byte 0          /* ext_loader_ver */
	.byte 0          /* ext_loader_type */
	.org 0x228
	.long 0          /* cmd_line_ptr */
	.long 0x37ffffff /* initrd_addr_max */
	.long 0x200000   /* kernel_alignment */
	.byte relocatable_kernel_flag /* relocatable_kernel (linker script) */
	.byte 21         /* min_alignment */
	.word 0x0001     /* xloadflags: XLF_KERNEL_64 (64-bit entry at +0x200) */
	.long 2047       /* cmdline_size */
	.long 0          /* hardware_subarch */
	.quad 0          /* hardware_subarch_data */
	.long 0          /* payload_offset */
	.long 0          /* payload_length */
	.quad 0          /* setup_data */
	.org 0x258
	.quad kernel_base /* pref_address */
	.long init_size  /* init_size, from the linker script */
	.long 0          /* handover_offset */
	.long 0          /* kernel_info_offset */
hdr_end:
kernel_version:
	.asciz "rvmm test guest"

start_of_setup:
	cli
	cld
	movw %cs, %ax
	subw $0x20, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movw $STACK_TOP, %sp
	/* boot_params: zeroed, then the (loader-modified) setup header copied in */
	movw $BP_BUF, %di
	xorw %ax, %ax
	movw $2048, %cx
	rep stosw
	movw $0x1f1, %si
	movw $(BP_BUF + 0x1f1), %di
	movw $(hdr_end - _setup_start - 0x1f1), %cx
	rep movsb
	/* e820 map from the BIOS (int 0x15, eax = 0xe820) */
	xorl %ebx, %ebx
	movw $(BP_BUF + 0x2d0), %di
	xorw %bp, %bp
2:	movl $0xe820, %eax
	movl $20, %ecx
	movl $0x534d4150, %edx
	int $0x15
	jc 3f
	cmpl $0x534d4150, %eax
	jne 3f
	incw %bp
	addw $20, %di
	testl %ebx, %ebx
	jz 3f
	cmpw $128, %bp
	jb 2b
3:	movw %cs, %ax
	subw $0x20, %ax
	movw %ax, %ds
	movw %bp, %ax
	movb %al, (BP_BUF + 0x1e8)
	/* linear address of this segment, to patch the GDT pointer and the far jump */
	xorl %ebx, %ebx
	movw %ds, %bx
	shll $4, %ebx
	movl %ebx, %eax
	addl $(setup_gdt - _setup_start), %eax
	movl %eax, (setup_gdtr - _setup_start + 2)
	movl %ebx, %eax
	addl $(pm32 - _setup_start), %eax
	movl %eax, (setup_farptr - _setup_start)
	movl %ebx, %esi
	addl $BP_BUF, %esi
	lgdtl (setup_gdtr - _setup_start)
	movl %cr0, %eax
	orl $1, %eax
	movl %eax, %cr0
	ljmpl *(setup_farptr - _setup_start)

	.code32
pm32:
	movl $0x18, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %fs
	movl %eax, %gs
	movl %eax, %ss
	xorl %ebp, %ebp
	xorl %edi, %edi
	xorl %ebx, %ebx
	jmp *0x214(%esi)

	.balign 8
setup_gdt:
	.quad 0, 0
	.quad 0x00cf9a000000ffff /* 0x10 __BOOT_CS */
	.quad 0x00cf92000000ffff /* 0x18 __BOOT_DS */
setup_gdtr:
	.word 31
	.long 0
setup_farptr:
	.long 0
	.word 0x10

/* Lets the guest know at run time that it was built as a bzImage (see boot_info.bzimage). */
	.section .rodata
	.globl image_is_bzimage
image_is_bzimage:
	.byte 1

	.section .note.GNU-stack, "", @progbits
