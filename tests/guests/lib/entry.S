/* Entry points, long-mode switch, GDT, identity page tables, interrupt stubs, the ring-3 switch
 * and the AP trampoline. Every entry ends up in 64-bit ring 0 on our own GDT and page tables and
 * calls lib_start (cpu.c).
 *
 * Entries (the image formats pick theirs):
 *   entry32_bzimage  32-bit protected mode, paging off, ESI = boot_params (boot.rst, code32_start)
 *   entry64          64-bit mode, RSI = boot_params (boot.rst 64-bit protocol; image +0x200)
 *   entry32_pvh      32-bit protected mode, paging off, EBX = hvm_start_info (Xen PVH ABI)
 */
#define BOOT_BZIMAGE32 1
#define BOOT_64 2
#define BOOT_PVH 3
#define MSR_EFER 0xc0000080
#define MAX_APS 31

/* ---------------------------------------------------------------- 32-bit bzImage entry */
	.section .head32, "ax"
	.code32
	.globl entry32_bzimage
entry32_bzimage:
	cli
	movl %esi, %ebp
	movl $BOOT_BZIMAGE32, %ebx
	jmp entry32_common

/* ---------------------------------------------------------------- 64-bit entry (+0x200) */
	.section .head64, "ax"
	.code64
	.globl entry64
entry64:
	cli
	cld
	movq %rsi, %rbp
	movq $boot_stack_top, %rsp
	/* Capture the entry state for the guest to check. */
	xorl %eax, %eax
	movw %cs, %ax
	movq %rax, saved_cs
	movw %ds, %ax
	movq %rax, saved_ds
	movw %ss, %ax
	movq %rax, saved_ss
	pushfq
	popq saved_rflags
	movq %cr0, %rax
	movq %rax, saved_cr0
	movq %cr3, %rax
	movq %rax, saved_cr3
	movq %cr4, %rax
	movq %rax, saved_cr4
	movl $MSR_EFER, %ecx
	rdmsr
	movl %eax, saved_efer
	movl %edx, saved_efer + 4
	/* Zero .bss (the loader need not). */
	movq $__bss_start, %rdi
	movq $__bss_end, %rcx
	subq %rdi, %rcx
	shrq $3, %rcx
	xorl %eax, %eax
	rep stosq
	movq %rbp, boot_ptr
	movl $BOOT_64, boot_kind
	lgdt gdt_ptr
	movq $pml4, %rax
	movq %rax, %cr3
	pushq $0x10
	pushq $long_common
	lretq

/* ---------------------------------------------------------------- 32-bit PVH entry */
	.text
	.code32
	.globl entry32_pvh
entry32_pvh:
	cli
	movl %ebx, %ebp
	movl $BOOT_PVH, %ebx
	/* fall through */
entry32_common:
	cld
	movl $boot_stack_top, %esp
	xorl %eax, %eax
	movw %cs, %ax
	movl %eax, saved_cs
	movw %ds, %ax
	movl %eax, saved_ds
	movw %ss, %ax
	movl %eax, saved_ss
	pushfl
	popl saved_rflags
	movl %cr0, %eax
	movl %eax, saved_cr0
	movl %cr3, %eax
	movl %eax, saved_cr3
	movl %cr4, %eax
	movl %eax, saved_cr4
	movl $__bss_start, %edi
	movl $__bss_end, %ecx
	subl %edi, %ecx
	shrl $2, %ecx
	xorl %eax, %eax
	rep stosl
	movl %ebp, boot_ptr
	movl %ebx, boot_kind
	lgdt gdt_ptr
	ljmp $0x08, $1f
1:	movl $0x18, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	movl %eax, %fs
	movl %eax, %gs
	call enable_long_mode32
	ljmp $0x10, $long_common

/* Turn on PAE, our page tables, EFER.LME and paging (from 32-bit protected mode). */
enable_long_mode32:
	movl %cr4, %eax
	orl $0x20, %eax
	movl %eax, %cr4
	movl $pml4, %eax
	movl %eax, %cr3
	movl $MSR_EFER, %ecx
	rdmsr
	orl $0x100, %eax
	wrmsr
	movl %cr0, %eax
	orl $0x80000001, %eax
	movl %eax, %cr0
	ret

	.code64
long_common:
	movl $0x18, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	movl %eax, %fs
	movl %eax, %gs
	movq $boot_stack_top, %rsp
	xorl %ebp, %ebp
	call lib_start
2:	hlt
	jmp 2b

/* ---------------------------------------------------------------- ring 3 and ring-0 calls */
/* enter_user(fn, arg, stack): iretq to fn(arg) in ring 3 with IOPL 3 (where honoured; ports are
 * also open in the TSS I/O bitmap) and interrupts off. */
	.globl enter_user
enter_user:
	pushq $0x23
	pushq %rdx
	pushq $0x3002
	pushq $0x2b
	pushq %rdi
	movq %rsi, %rdi
	iretq

/* Ring-3 to ring-0 gates. On software-nested KVM neither `int n` (#UD) nor SYSCALL/SYSRET work
 * from ring 3, and IOPL is forced to 0 there (so no sti/cli), but exceptions are delivered
 * properly: each gate is a UD2 at a known address that interrupt_dispatch recognises. From
 * ring 0 they act directly. */
/* u64 ring0_call(fn, arg): fn(arg) in ring 0 with interrupts off. */
	.globl ring0_call, ring0_gate_call
ring0_call:
	movw %cs, %ax
	testb $3, %al
	jz 1f
ring0_gate_call:
	ud2
	ret
1:	movq %rdi, %rax
	movq %rsi, %rdi
	jmp *%rax

/* irq_enable(), irq_disable(): set/clear IF (in ring 3 through the saved RFLAGS). */
	.globl irq_enable, irq_disable, ring0_gate_sti, ring0_gate_cli
irq_enable:
	movw %cs, %ax
	testb $3, %al
	jz 1f
ring0_gate_sti:
	ud2
	ret
1:	sti
	ret
irq_disable:
	movw %cs, %ax
	testb $3, %al
	jz 1f
ring0_gate_cli:
	ud2
	ret
1:	cli
	ret

/* ---------------------------------------------------------------- interrupt stubs */
/* 256 stubs of 16 bytes each; vectors that push no error code get a 0 pushed. */
	.balign 16
	.globl isr_stubs
isr_stubs:
	.set vec, 0
	.rept 256
	.balign 16
	.if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
	.else
	pushq $0
	.endif
	pushq $vec
	jmp isr_common
	.set vec, vec + 1
	.endr

isr_common:
	pushq %rax
	pushq %rbx
	pushq %rcx
	pushq %rdx
	pushq %rsi
	pushq %rdi
	pushq %rbp
	pushq %r8
	pushq %r9
	pushq %r10
	pushq %r11
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	cld
	movq %rsp, %rdi
	call interrupt_dispatch
	popq %r15
	popq %r14
	popq %r13
	popq %r12
	popq %r11
	popq %r10
	popq %r9
	popq %r8
	popq %rbp
	popq %rdi
	popq %rsi
	popq %rdx
	popq %rcx
	popq %rbx
	popq %rax
	addq $16, %rsp
	iretq

/* ---------------------------------------------------------------- AP trampoline */
/* Copied to a page below 1 MiB; an AP started by SIPI runs it in real mode with CS = page >> 4,
 * IP = 0, so it only uses offsets from its own start. */
	.code16
	.globl ap_tramp_start, ap_tramp_end
ap_tramp_start:
	cli
	movw %cs, %ax
	movw %ax, %ds
	lgdtl (ap_tramp_gdtr - ap_tramp_start)
	movl %cr0, %eax
	orl $1, %eax
	movl %eax, %cr0
	ljmpl *(ap_tramp_farptr - ap_tramp_start)
	.balign 8
ap_tramp_gdtr:
	.word gdt_end - gdt - 1
	.long gdt
ap_tramp_farptr:
	.long ap_entry32
	.word 0x08
ap_tramp_end:

	.code32
ap_entry32:
	movl $0x18, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	movl %eax, %fs
	movl %eax, %gs
	/* enable_long_mode32 needs a stack for its return address: use a scratch word. */
	movl $ap_scratch_stack_top, %esp
	call enable_long_mode32
	ljmp $0x10, $ap_entry64

	.code64
ap_entry64:
	lgdt gdt_ptr
	movl $1, %eax
	lock xaddl %eax, ap_next
	incl %eax
	cmpl $MAX_APS, %eax
	ja 3f
	movl %eax, %edi
	movl %eax, %ecx
	shlq $12, %rcx
	leaq ap_stacks(%rcx), %rsp
	lidt idt_ptr
	call ap_entry_c
3:	cli
	hlt
	jmp 3b

/* ---------------------------------------------------------------- data */
	.data
	.globl boot_ptr, boot_kind, saved_cs, saved_ds, saved_ss, saved_rflags
	.globl saved_cr0, saved_cr3, saved_cr4, saved_efer
	.balign 8
boot_ptr:	.quad 0
boot_kind:	.quad 0
saved_cs:	.quad 0
saved_ds:	.quad 0
saved_ss:	.quad 0
saved_rflags:	.quad 0
saved_cr0:	.quad 0
saved_cr3:	.quad 0
saved_cr4:	.quad 0
saved_efer:	.quad 0
ap_next:	.long 0
	.long 0
/* Shared by APs only for one call/ret while they enter long mode: they race, but all push
 * and pop the same return address. */
	.fill 16, 1, 0
ap_scratch_stack_top:

	.balign 16
	.globl gdt, gdt_tss, gdt_end, gdt_ptr
gdt:
	.quad 0
	.quad 0x00cf9a000000ffff /* 0x08 32-bit code, ring 0 */
	.quad 0x00af9a000000ffff /* 0x10 64-bit code, ring 0 */
	.quad 0x00cf92000000ffff /* 0x18 data, ring 0 */
	/* user data before user code: the order SYSRET requires (STAR[63:48] = 0x18) */
	.quad 0x00cff2000000ffff /* 0x20 data, ring 3 (selector 0x23) */
	.quad 0x00affa000000ffff /* 0x28 64-bit code, ring 3 (selector 0x2b) */
gdt_tss:
	.quad 0, 0               /* 0x30 64-bit TSS, filled by lib_start */
gdt_end:
	.balign 8
gdt_ptr:
	.word gdt_end - gdt - 1
	.quad gdt

/* Identity map of the first 4 GiB with 2 MiB pages, user-accessible (so ring 3 can do port,
 * MMIO and table access); 3-4 GiB (PCI, IOAPIC, LAPIC) uncached. */
	.balign 4096
	.globl pml4, pdpt
pml4:
	.quad pdpt + 0x7
	.fill 511, 8, 0
pdpt:
	.quad pd + 0x7, pd + 0x1007, pd + 0x2007, pd + 0x3007
	.fill 508, 8, 0
pd:
	.set i, 0
	.rept 2048
	.if i >= 1536
	.quad (i << 21) | 0x9f
	.else
	.quad (i << 21) | 0x87
	.endif
	.set i, i + 1
	.endr

	.bss
	.balign 4096
	.globl boot_stack_top, user_stack_top, ap_stacks
boot_stack:
	.fill 16384, 1, 0
boot_stack_top:
user_stack:
	.fill 32768, 1, 0
user_stack_top:
ap_stacks:
	.fill 4096 * MAX_APS, 1, 0

	.section .high_tables, "aw", @nobits
	.balign 4096
	.globl high_page_dirs
high_page_dirs:
	.fill 60 * 4096, 1, 0

	.section .note.GNU-stack, "", @progbits
