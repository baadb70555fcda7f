/* Local APIC (xAPIC MMIO at 0xfee00000) and IOAPIC access; INIT-SIPI-SIPI (Intel SDM vol. 3,
 * "MP initialization"). */
#include "rvmm.h"

u32 lapic_read(u32 reg) { return mmio_read32(LAPIC_BASE + reg); }
void lapic_write(u32 reg, u32 v) { mmio_write32(LAPIC_BASE + reg, v); }
u32 lapic_id(void) { return lapic_read(LAPIC_ID) >> 24; }
void lapic_eoi(void) { lapic_write(LAPIC_EOI, 0); }

void lapic_enable(void)
{
	lapic_write(LAPIC_TPR, 0);
	lapic_write(LAPIC_SVR, 0x100 | 0xff);
}

void lapic_send_ipi(u32 dest, u32 icr_lo)
{
	lapic_write(LAPIC_ICR_HI, dest << 24);
	lapic_write(LAPIC_ICR_LO, icr_lo);
	for (int i = 0; i < 100000 && (lapic_read(LAPIC_ICR_LO) & (1 << 12)); i++)
		cpu_relax();
}

void lapic_start_ap(u32 apic_id, u8 vector)
{
	lapic_send_ipi(apic_id, 0x00004500); /* INIT, level assert */
	delay_us(10000);
	for (int i = 0; i < 2; i++) {
		lapic_send_ipi(apic_id, 0x00004600 | vector); /* Start-up */
		delay_us(200);
	}
}

u32 ioapic_read(u64 base, u32 reg)
{
	mmio_write32(base, reg);
	return mmio_read32(base + 0x10);
}

void ioapic_write(u64 base, u32 reg, u32 v)
{
	mmio_write32(base, reg);
	mmio_write32(base + 0x10, v);
}

void ioapic_route(u64 base, u32 pin, u8 vector, u32 dest, u16 mps_flags)
{
	u32 lo = vector;
	if ((mps_flags & 3) == 3)
		lo |= 1 << 13; /* active low */
	if (((mps_flags >> 2) & 3) == 3)
		lo |= 1 << 15; /* level triggered */
	ioapic_write(base, 0x10 + 2 * pin + 1, dest << 24);
	ioapic_write(base, 0x10 + 2 * pin, lo);
}
