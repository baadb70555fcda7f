/* A guest that pokes every device with odd values, widths and offsets (while avoiding the ones
 * that legitimately end the run: reset via 0x64/0xcf9, ACPI sleep, debug exit). The monitor must
 * survive all of it and keep the VM running: the guest ends with RESULT: PASS. */
#include "rvmm.h"

static u32 seed = 0x12345678;

static u32 rnd(void)
{
	seed ^= seed << 13;
	seed ^= seed >> 17;
	seed ^= seed << 5;
	return seed;
}

static void poke_port(u16 port, int write)
{
	(void)inb(port);
	(void)inw(port);
	(void)inl(port);
	if (write) {
		outb(port, (u8)rnd());
		outw(port, (u16)rnd());
		outl(port, rnd());
	}
}

static void poke_mmio(u64 addr, int write)
{
	(void)mmio_read8(addr);
	(void)mmio_read16(addr);
	(void)mmio_read32(addr);
	(void)mmio_read64(addr);
	if (write) {
		mmio_write8(addr, (u8)rnd());
		mmio_write16(addr, (u16)rnd());
		mmio_write32(addr, rnd());
		mmio_write64(addr, ((u64)rnd() << 32) | rnd());
	}
}

int guest_main(void)
{
	printf("hostile: start\n");

	/* COM1: reads at every offset and width (writes would garble the report). QEMU aborts on
	 * wide UART accesses, so its oracle run passes hostile.narrow_serial. */
	char flag[4];
	int narrow = cmdline_get(boot_info.cmdline, "hostile.narrow_serial", flag, sizeof(flag)) ||
		     strstr(boot_info.cmdline, "hostile.narrow_serial") != NULL;
	for (u16 p = 0x3f8; p < 0x400; p++) {
		if (narrow)
			(void)inb(p);
		else
			poke_port(p, 0);
	}
	/* i8042: data-port writes and harmless controller commands (no 0xd1 output port, no
	 * 0xf0-0xff pulses: bit 0 is the reset line). */
	static const u8 cmds[] = { 0x20, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xad, 0xae, 0xc0, 0xd0, 0xd2, 0xd3, 0xd4, 0x60 };
	for (unsigned i = 0; i < sizeof(cmds); i++) {
		outb(0x64, cmds[i]);
		outb(0x60, (u8)rnd());
		(void)inb(0x60);
		(void)inb(0x64);
	}
	outb(0x64, 0x60); /* restore a sane configuration byte */
	outb(0x60, 0x47);
	(void)inw(0x60);
	(void)inl(0x64);
	/* CMOS: every index (with and without the NMI-disable bit), odd widths. */
	for (u32 i = 0; i < 256; i++) {
		outb(0x70, (u8)i);
		(void)inb(0x71);
	}
	poke_port(0x70, 0);
	(void)inw(0x71);
	(void)inl(0x71);
	outb(0x70, 0x0a); /* leave the index on a harmless register */
	/* PCI configuration: odd addresses, widths and offsets (0xcf9 is the reset register). */
	for (int i = 0; i < 64; i++) {
		outl(0xcf8, rnd() | 0x80000000u);
		(void)inb(0xcfc + (i & 3));
		(void)inw(0xcfc + (i & 2));
		(void)inl(0xcfc);
	}
	outl(0xcf8, 0x80fff8fc); /* bus 255 dev 31 fn 0 offset 0xfc */
	outl(0xcfc, 0xffffffff);
	outb(0xcf8, 0x12);
	outw(0xcfa, 0x3456);
	(void)inb(0xcfb);
	outl(0xcf8, 0);
	/* Unassigned ports and the boot marker. */
	static const u16 ports[] = { 0x0, 0x1f0, 0x170, 0x278, 0x2f8, 0x3e8, 0x402, 0x510, 0x1234, 0x8000, 0xdead, 0xfff0, 0xfffc };
	/* (not 0xffff: a wide access there also needs the I/O bitmap's terminator byte and faults) */
	for (unsigned i = 0; i < sizeof(ports) / sizeof(ports[0]); i++)
		poke_port(ports[i], 1);
	for (int i = 0; i < 4; i++)
		outb(0x80, (u8)(0x70 + i));
	(void)inl(0x80);
	/* ACPI PM1a: status/enable reads and writes, control without SLP_EN. */
	u64 fadt = acpi_find_table("FACP", 0);
	if (fadt) {
		u16 evt = (u16)mmio_read32(fadt + 56), cnt = (u16)mmio_read32(fadt + 64);
		if (evt) {
			poke_port(evt, 0);
			outw(evt, 0xffff);
			outw(evt + 2, 0x0000);
		}
		if (cnt) {
			u16 v = inw(cnt);
			outw(cnt, v & ~(1 << 13));
			(void)inl(cnt);
		}
	}
	printf("hostile: ports done\n");

	/* MMIO: the PCI hole, ECAM, HPET, IOAPIC with bad selectors, LAPIC reserved registers. */
	static const u64 holes[] = { 0xc0000000, 0xc0001000, 0xd0000000, 0xdffff000, 0xe0000000, 0xe00ff000,
				     0xefff0000, 0xfed00000, 0xfeb00000, 0xff000000, 0xfffff000 };
	for (unsigned i = 0; i < sizeof(holes) / sizeof(holes[0]); i++)
		poke_mmio(holes[i], 1);
	poke_mmio(0xc0000ffd, 1); /* unaligned, crossing nothing */
	for (u32 sel = 0; sel < 0x100; sel += 7) {
		mmio_write32(0xfec00000, sel);
		(void)mmio_read32(0xfec00010);
	}
	mmio_write32(0xfec00000, 0xffffffff);
	(void)mmio_read8(0xfec00010);
	(void)mmio_read32(0xfec00020);
	mmio_write32(0xfec00040, rnd());
	static const u32 lapic_regs[] = { 0x000, 0x010, 0x040, 0x0a0, 0x0c0, 0x1f0, 0x3f0, 0xffc };
	for (unsigned i = 0; i < sizeof(lapic_regs) / sizeof(lapic_regs[0]); i++)
		(void)lapic_read(lapic_regs[i]);
	printf("hostile: mmio done\n");

	/* Still alive and the devices still work: serial prints, CMOS answers. */
	serial_init();
	outb(0x70, 0x0a);
	u8 rtc_a = inb(0x71);
	printf("hostile: survived rtc_a=%#x\n", rtc_a);
	finish();
}
