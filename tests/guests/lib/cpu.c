/* Ring-0 setup (TSS, IDT), interrupt dispatch, the switch to ring 3, and AP bring-up glue. */
#include "rvmm.h"

struct tss {
	u32 reserved0;
	u64 rsp0, rsp1, rsp2;
	u64 reserved1;
	u64 ist[7];
	u64 reserved2;
	u16 reserved3, iomap_base;
	u8 iomap[8192 + 1]; /* all ports allowed, then the 0xff terminator */
} __attribute__((packed));

struct idt_gate {
	u16 off_lo, selector;
	u8 ist, type;
	u16 off_mid;
	u32 off_hi, reserved;
} __attribute__((packed));

struct {
	u16 limit;
	u64 base;
} __attribute__((packed)) idt_ptr;

static struct tss tss;
static struct idt_gate idt[256] __attribute__((aligned(16)));
static irq_handler handlers[256];
volatile u32 ap_arrived;

extern char isr_stubs[], boot_stack_top[], user_stack_top[];
extern u64 gdt_tss[2];
extern u64 boot_kind;
extern char ring0_gate_call[], ring0_gate_sti[], ring0_gate_cli[];
void enter_user(void (*fn)(u64), u64 arg, void *stack) __attribute__((noreturn));
void boot_info_parse(void);
void lib_start(void);
void interrupt_dispatch(struct irq_frame *f);
void ap_entry_c(u32 index);

static void set_gate(int v, u64 handler, u8 type)
{
	idt[v].off_lo = handler & 0xffff;
	idt[v].selector = 0x10;
	idt[v].ist = 0;
	idt[v].type = type;
	idt[v].off_mid = (handler >> 16) & 0xffff;
	idt[v].off_hi = handler >> 32;
	idt[v].reserved = 0;
}

/* Remap the 8259 pair to vectors 0x20-0x2f and mask every line: firmware (QEMU's SeaBIOS) leaves
 * them at the BIOS vectors, where the PIT's IRQ 0 would alias the double-fault vector. */
static void pic_init(void)
{
	outb(0x20, 0x11);
	outb(0xa0, 0x11);
	outb(0x21, 0x20);
	outb(0xa1, 0x28);
	outb(0x21, 0x04);
	outb(0xa1, 0x02);
	outb(0x21, 0x01);
	outb(0xa1, 0x01);
	outb(0x21, 0xff);
	outb(0xa1, 0xff);
}

/* Identity-map 4-64 GiB (uncached 2 MiB pages) so 64-bit BARs and RAM above 4 GiB are reachable.
 * Runs in ring 3, natively: 30720 entries would be slow in interpreted kernel mode. The entries
 * were not present before, so no TLB flush is needed. */
static void map_high(void)
{
	extern u64 pdpt[512];
	extern u64 high_page_dirs[60][512];
	for (u64 i = 0; i < 60; i++) {
		for (u64 j = 0; j < 512; j++)
			high_page_dirs[i][j] = (((4 + i) << 30) | (j << 21)) | 0x9f;
		barrier();
		pdpt[4 + i] = (u64)high_page_dirs[i] | 0x7;
	}
}

static void user_start(u64 arg)
{
	(void)arg;
	map_high();
	boot_info_parse();
	boot_marker(0x01);
	debug_exit((u8)guest_main());
}

/* Called from entry.S in ring 0 on our GDT and page tables; kept short because kernel-mode code
 * is interpreted on software-nested KVM. */
void lib_start(void)
{
	serial_init();
	pic_init();
	u64 base = (u64)&tss;
	u64 limit = sizeof(tss) - 1;
	tss.rsp0 = (u64)boot_stack_top;
	tss.iomap_base = __builtin_offsetof(struct tss, iomap);
	tss.iomap[8192] = 0xff;
	gdt_tss[0] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89UL << 40) |
		     (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
	gdt_tss[1] = base >> 32;
	__asm__ volatile("ltr %w0" ::"r"(0x30));
	for (int v = 0; v < 256; v++)
		set_gate(v, (u64)isr_stubs + 16 * v, 0x8e);
	idt_ptr.limit = sizeof(idt) - 1;
	idt_ptr.base = (u64)idt;
	__asm__ volatile("lidt %0" ::"m"(idt_ptr));
	enter_user(user_start, 0, user_stack_top);
}

void set_irq_handler(u8 vector, irq_handler fn)
{
	handlers[vector] = fn;
}

static void crash_print(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	serial_write(buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

void interrupt_dispatch(struct irq_frame *f)
{
	if (f->vector == 6 && (f->cs & 3) == 3) {
		if (f->rip == (u64)ring0_gate_call) {
			u64 (*fn)(u64) = (u64(*)(u64))f->rdi;
			f->rax = fn(f->rsi);
			f->rip += 2;
			return;
		}
		if (f->rip == (u64)ring0_gate_sti || f->rip == (u64)ring0_gate_cli) {
			f->rflags = f->rip == (u64)ring0_gate_sti ? f->rflags | 0x200 : f->rflags & ~0x200UL;
			f->rip += 2;
			return;
		}
	}
	if (f->vector < 32) {
		u64 cr2;
		__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
		/* No printf lock here: the fault may have happened while it was held. */
		crash_print("EXCEPTION: vector=%lu error=%#lx rip=%#lx cs=%#lx rflags=%#lx rsp=%#lx cr2=%#lx\n",
			    f->vector, f->error, f->rip, f->cs, f->rflags, f->rsp, cr2);
		outb(0xf4, EXIT_CRASH);
		for (;;)
			__asm__ volatile("cli; hlt");
	}
	if (handlers[f->vector])
		handlers[f->vector](f);
	else
		crash_print("unexpected interrupt: vector=%lu\n", f->vector);
}

__attribute__((weak)) void ap_main(u32 index)
{
	(void)index;
}

void ap_entry_c(u32 index)
{
	__atomic_fetch_add(&ap_arrived, 1, __ATOMIC_SEQ_CST);
	ap_main(index);
}

u8 ap_trampoline_install(u64 page)
{
	extern char ap_tramp_start[], ap_tramp_end[];
	memcpy((void *)page, ap_tramp_start, (size_t)(ap_tramp_end - ap_tramp_start));
	return (u8)(page >> 12);
}

u64 tsc_khz(void)
{
	static u64 khz;
	if (khz)
		return khz;
	struct cpuid_regs r = cpuid(0x40000000, 0);
	if (r.eax >= 0x40000010) {
		u32 k = cpuid(0x40000010, 0).eax;
		if (k)
			return khz = k;
	}
	if (cpuid(0, 0).eax >= 0x16) {
		u32 mhz = cpuid(0x16, 0).eax & 0xffff;
		if (mhz)
			return khz = (u64)mhz * 1000;
	}
	return khz = 4000000; /* unknown: assume a fast TSC so delays err on the long side */
}

void delay_us(u64 us)
{
	u64 end = rdtsc() + us * tsc_khz() / 1000;
	while (rdtsc() < end)
		cpu_relax();
}

__attribute__((noreturn)) void debug_exit(u8 code)
{
	outb(0xf4, code);
	for (;;)
		cpu_relax();
}
