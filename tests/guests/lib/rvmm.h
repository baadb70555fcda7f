/* Shared test-guest library: hardware access, serial output, ACPI, APIC, PCI and boot info.
 * Written from the public specs (Linux boot protocol, PVH start info, ACPI, Intel SDM, 8250,
 * PC/AT ports) and docs/guest-interface.md; see tests/guests/README.md for the conventions. */
#ifndef RVMM_GUEST_H
#define RVMM_GUEST_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;
typedef long i64;
typedef unsigned long size_t;
typedef __builtin_va_list va_list;
#define va_start(v, l) __builtin_va_start(v, l)
#define va_end(v) __builtin_va_end(v)
#define va_arg(v, t) __builtin_va_arg(v, t)
#define NULL ((void *)0)

/* Debug-exit codes (port 0xf4). rvmm exits with the value, QEMU with (v << 1) | 1. */
#define EXIT_PASS 0x10
#define EXIT_FAIL 0x11
#define EXIT_CRASH 0x12

/* ---- port and MMIO access (allowed in ring 3: the TSS I/O bitmap grants every port) ---- */
static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u16 inw(u16 port) { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u8 mmio_read8(u64 a) { return *(volatile u8 *)a; }
static inline u16 mmio_read16(u64 a) { return *(volatile u16 *)a; }
static inline u32 mmio_read32(u64 a) { return *(volatile u32 *)a; }
static inline u64 mmio_read64(u64 a) { return *(volatile u64 *)a; }
static inline void mmio_write8(u64 a, u8 v) { *(volatile u8 *)a = v; }
static inline void mmio_write16(u64 a, u16 v) { *(volatile u16 *)a = v; }
static inline void mmio_write32(u64 a, u32 v) { *(volatile u32 *)a = v; }
static inline void mmio_write64(u64 a, u64 v) { *(volatile u64 *)a = v; }

/* ---- CPU ---- */
struct cpuid_regs { u32 eax, ebx, ecx, edx; };
static inline struct cpuid_regs cpuid(u32 leaf, u32 subleaf) {
	struct cpuid_regs r;
	__asm__ volatile("cpuid" : "=a"(r.eax), "=b"(r.ebx), "=c"(r.ecx), "=d"(r.edx) : "a"(leaf), "c"(subleaf));
	return r;
}
static inline u64 rdtsc(void) { u32 lo, hi; __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi)); return ((u64)hi << 32) | lo; }
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }
/* Set/clear IF. Use these, not sti/cli: ring 3 on software-nested KVM runs with IOPL 0. */
void irq_enable(void);
void irq_disable(void);
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }
/* Ring-0 only (call through ring0_call from guest_main). */
static inline u64 rdmsr(u32 msr) { u32 lo, hi; __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr)); return ((u64)hi << 32) | lo; }
static inline void wrmsr(u32 msr, u64 v) { __asm__ volatile("wrmsr" ::"c"(msr), "a"((u32)v), "d"((u32)(v >> 32))); }
/* Write `v` to the boot-marker port 0x80 (rvmm logs the time since its start). */
static inline void boot_marker(u8 v) { outb(0x80, v); }
/* Current privilege level (0 = kernel, 3 = user). */
static inline int cpl(void) { u16 cs; __asm__ volatile("mov %%cs, %0" : "=r"(cs)); return cs & 3; }

/* Run fn(arg) in ring 0 (through a UD2 gate, interrupts off) and return its result; works from
 * ring 0 too. */
u64 ring0_call(u64 (*fn)(u64), u64 arg);
/* Spin for about `us` microseconds (TSC based, assumes a TSC of at least 1 GHz: an upper bound). */
void delay_us(u64 us);
/* TSC frequency in kHz (KVM/hypervisor leaf 0x40000010, else CPUID 0x16, else 4 GHz assumed). */
u64 tsc_khz(void);
/* TSC value `ms` milliseconds from now, for timeouts: while (rdtsc() < deadline) ... */
static inline u64 tsc_deadline_ms(u64 ms) { return rdtsc() + ms * tsc_khz(); }

/* ---- interrupts ---- */
/* Saved state of an interrupted context, as pushed by the library's interrupt stubs. */
struct irq_frame {
	u64 r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
	u64 vector, error, rip, cs, rflags, rsp, ss;
};
typedef void (*irq_handler)(struct irq_frame *);
/* Route `vector` (32..255) to `fn`, which runs in ring 0 and must send its own EOI. */
void set_irq_handler(u8 vector, irq_handler fn);

/* ---- serial (COM1 8250 at 0x3f8) and text output ---- */
void serial_init(void);
void serial_putc(char c);
void serial_write(const char *s, size_t n);
/* printf subset: %d %i %u %x %X %p %s %c %%, flags '0' and '-', width, 'l'/'ll'/'z'. SMP safe. */
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int snprintf(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int vsnprintf(char *buf, size_t n, const char *fmt, va_list ap);
void puts(const char *s);

/* ---- ending the run ---- */
/* Write `code` to the debug-exit port 0xf4; never returns. */
__attribute__((noreturn)) void debug_exit(u8 code);
/* Count of check() failures so far; finish() reports them. */
extern int check_failures;
/* Print "FAIL: <what>" and count a failure when `ok` is false; returns ok. */
int check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Print "RESULT: PASS" / "RESULT: FAIL <n>" and debug-exit with EXIT_PASS / EXIT_FAIL. */
__attribute__((noreturn)) void finish(void);

/* ---- strings ---- */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
const char *strstr(const char *h, const char *n);
/* Copy the value of `key=` from a kernel command line into buf; returns 1 if present. */
int cmdline_get(const char *cmdline, const char *key, char *buf, size_t n);
/* Parse an unsigned number (decimal, or hex with 0x), with an optional K/M/G suffix. */
u64 parse_u64(const char *s);
/* FNV-1a 32-bit hash of a byte range (used to check initrd contents). */
u32 fnv1a32(const void *p, size_t n);

/* ---- boot information, normalised from boot_params or hvm_start_info ---- */
#define BOOT_BZIMAGE32 1 /* 32-bit entry at code32_start, ESI = boot_params */
#define BOOT_64 2        /* 64-bit entry (bzImage +0x200 or ELF e_entry), RSI = boot_params */
#define BOOT_PVH 3       /* PVH 32-bit entry, EBX = hvm_start_info */
#define E820_RAM 1
#define E820_RESERVED 2
#define E820_ACPI 3
#define E820_NVS 4
#define MAX_E820 128
struct e820_entry { u64 addr, size; u32 type; };
struct boot_info {
	int kind;
	int bzimage;      /* this image is a bzImage (its setup header is the one in boot_params) */
	u64 ptr;          /* boot_params or hvm_start_info address */
	const char *cmdline; /* "" when none */
	u64 cmdline_addr;
	u64 initrd_addr, initrd_size;
	u64 rsdp;         /* from the boot structure; 0 when not given */
	int nr_e820;
	struct e820_entry e820[MAX_E820];
	/* CPU state captured at the entry point, before the library changed anything. */
	u64 entry_cs, entry_ds, entry_ss, entry_rflags, entry_cr0, entry_cr3, entry_cr4, entry_efer;
};
extern struct boot_info boot_info;
const char *boot_kind_name(int kind);
/* Linear addresses of this image, from the linker script. */
extern char __image_start[], __image_end[], __bss_end[];

/* boot_params (zero page) field offsets, from Documentation/arch/x86/boot.rst and bootparam.h */
#define BP_ACPI_RSDP_ADDR 0x070
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE 0x0c4
#define BP_EXT_CMD_LINE_PTR 0x0c8
#define BP_E820_ENTRIES 0x1e8
#define BP_SETUP_SECTS 0x1f1
#define BP_BOOT_FLAG 0x1fe
#define BP_HEADER 0x202
#define BP_VERSION 0x206
#define BP_TYPE_OF_LOADER 0x210
#define BP_LOADFLAGS 0x211
#define BP_CODE32_START 0x214
#define BP_RAMDISK_IMAGE 0x218
#define BP_RAMDISK_SIZE 0x21c
#define BP_CMD_LINE_PTR 0x228
#define BP_INITRD_ADDR_MAX 0x22c
#define BP_KERNEL_ALIGNMENT 0x230
#define BP_RELOCATABLE 0x234
#define BP_XLOADFLAGS 0x236
#define BP_CMDLINE_SIZE 0x238
#define BP_PREF_ADDRESS 0x258
#define BP_INIT_SIZE 0x260
#define BP_E820_TABLE 0x2d0
static inline u8 bp8(u64 bp, u32 off) { return *(volatile u8 *)(bp + off); }
static inline u16 bp16(u64 bp, u32 off) { return *(volatile u16 *)(bp + off); }
static inline u32 bp32(u64 bp, u32 off) { return *(volatile u32 *)(bp + off); }
static inline u64 bp64(u64 bp, u32 off) { return *(volatile u64 *)(bp + off); }

/* ---- ACPI ---- */
struct acpi_header {
	char sig[4];
	u32 length;
	u8 revision, checksum;
	char oem_id[6], oem_table_id[8];
	u32 oem_revision, creator_id, creator_revision;
} __attribute__((packed));
/* Sum of the bytes (a valid ACPI structure sums to 0). */
u8 acpi_checksum(const void *p, size_t n);
/* Scan the EBDA's first KiB and 0xe0000-0xfffff for "RSD PTR " with a valid checksum. */
u64 acpi_scan_rsdp(void);
/* Use this RSDP (boot-info one, else scanned) for acpi_find_table; returns it or 0. */
u64 acpi_init(void);
/* Find a table by signature through the XSDT (or RSDT) of the current RSDP; 0 when absent.
 * Tables with a bad checksum are reported and skipped. n selects the n-th match. */
u64 acpi_find_table(const char *sig, int n);
/* Address of the XSDT (or RSDT when there is no XSDT) in use. */
extern u64 acpi_root_table;
/* Find the _S5 sleep type (SLP_TYPa) in the DSDT; returns -1 when absent. */
int acpi_s5_slp_typ(u64 dsdt);
/* ACPI S5 power-off from the FADT (PM1a control, or the sleep control register on hardware-
 * reduced ACPI) and the DSDT's _S5; prints what it does. Returns only if the machine is still
 * running after ~1 s (then the caller reports the failure). */
void acpi_poweroff(void);
/* Processor entries of the MADT. */
struct madt_info {
	u64 lapic_addr;
	int nr_cpus;            /* enabled Local APIC / x2APIC entries */
	u32 apic_ids[256];
	int nr_ioapics;
	u64 ioapic_addr;        /* first IOAPIC */
	u32 ioapic_gsi_base;
	u32 isa_gsi[16];        /* ISA IRQ -> GSI after interrupt source overrides */
	u16 isa_flags[16];
};
/* Parse the MADT; returns 0 on success, -1 when there is none. */
int madt_parse(struct madt_info *m);

/* ---- Local APIC and IOAPIC (xAPIC MMIO) ---- */
#define LAPIC_BASE 0xfee00000UL
#define LAPIC_ID 0x020
#define LAPIC_VERSION 0x030
#define LAPIC_TPR 0x080
#define LAPIC_EOI 0x0b0
#define LAPIC_SVR 0x0f0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_LVT_LINT0 0x350
#define LAPIC_LVT_LINT1 0x360
#define LAPIC_TIMER_INIT 0x380
#define LAPIC_TIMER_CUR 0x390
#define LAPIC_TIMER_DIV 0x3e0
u32 lapic_read(u32 reg);
void lapic_write(u32 reg, u32 v);
u32 lapic_id(void);
/* Software-enable the LAPIC (SVR bit 8, spurious vector 0xff) and clear TPR. */
void lapic_enable(void);
void lapic_eoi(void);
/* Send an IPI: icr_lo command (vector | delivery mode | level...) to APIC id dest; waits for idle. */
void lapic_send_ipi(u32 dest, u32 icr_lo);
/* Start the AP with APIC id `apic_id` at real-mode page `vector` (INIT, SIPI, SIPI). */
void lapic_start_ap(u32 apic_id, u8 vector);
u32 ioapic_read(u64 base, u32 reg);
void ioapic_write(u64 base, u32 reg, u32 v);
/* Program IOAPIC redirection entry `pin` to deliver `vector` to APIC id `dest` (edge, high). */
void ioapic_route(u64 base, u32 pin, u8 vector, u32 dest, u16 mps_flags);

/* ---- application processors ---- */
/* Copy the real-mode AP trampoline to `page` (4 KiB aligned, below 1 MiB); returns the SIPI vector.
 * An AP started there enters long mode on the library's page tables and calls ap_main(index)
 * in ring 0 with its own 4 KiB stack; index counts APs in arrival order from 1. */
u8 ap_trampoline_install(u64 page);
/* Number of APs that reached ap_main so far. */
extern volatile u32 ap_arrived;
/* Provided by a guest that starts APs; runs in ring 0 with interrupts off; may return (then the
 * AP halts). */
void ap_main(u32 index);

/* ---- PCI configuration space ---- */
u32 pci_cfg_read32(u8 bus, u8 dev, u8 fn, u16 off);
void pci_cfg_write32(u8 bus, u8 dev, u8 fn, u16 off, u32 v);
u16 pci_cfg_read16(u8 bus, u8 dev, u8 fn, u16 off);
u8 pci_cfg_read8(u8 bus, u8 dev, u8 fn, u16 off);
/* ECAM base from the MCFG table (segment 0), or 0. */
u64 pci_ecam_base(void);
u32 pci_ecam_read32(u64 ecam, u8 bus, u8 dev, u8 fn, u16 off);
void pci_ecam_write32(u64 ecam, u8 bus, u8 dev, u8 fn, u16 off, u32 v);

/* ---- the guest ---- */
/* Each guest defines this; it runs in ring 3 with IOPL 3 and interrupts off. Its return value
 * is passed to debug_exit. */
int guest_main(void);

#endif
