/* PCI configuration space: legacy mechanism #1 (0xcf8/0xcfc) and ECAM from the MCFG table. */
#include "rvmm.h"

static u32 cf8(u8 bus, u8 dev, u8 fn, u16 off)
{
	return 0x80000000u | ((u32)bus << 16) | ((u32)(dev & 31) << 11) | ((u32)(fn & 7) << 8) |
	       (off & 0xfc);
}

u32 pci_cfg_read32(u8 bus, u8 dev, u8 fn, u16 off)
{
	outl(0xcf8, cf8(bus, dev, fn, off));
	return inl(0xcfc);
}

void pci_cfg_write32(u8 bus, u8 dev, u8 fn, u16 off, u32 v)
{
	outl(0xcf8, cf8(bus, dev, fn, off));
	outl(0xcfc, v);
}

u16 pci_cfg_read16(u8 bus, u8 dev, u8 fn, u16 off)
{
	outl(0xcf8, cf8(bus, dev, fn, off));
	return inw(0xcfc + (off & 2));
}

u8 pci_cfg_read8(u8 bus, u8 dev, u8 fn, u16 off)
{
	outl(0xcf8, cf8(bus, dev, fn, off));
	return inb(0xcfc + (off & 3));
}

u64 pci_ecam_base(void)
{
	u64 t = acpi_find_table("MCFG", 0);
	if (!t)
		return 0;
	u32 len = mmio_read32(t + 4);
	for (u32 off = 44; off + 16 <= len; off += 16)
		if (mmio_read16(t + off + 8) == 0)
			return mmio_read64(t + off);
	return 0;
}

static u64 ecam_addr(u64 ecam, u8 bus, u8 dev, u8 fn, u16 off)
{
	return ecam + ((u64)bus << 20) + ((u64)(dev & 31) << 15) + ((u64)(fn & 7) << 12) + (off & 0xffc);
}

u32 pci_ecam_read32(u64 ecam, u8 bus, u8 dev, u8 fn, u16 off)
{
	return mmio_read32(ecam_addr(ecam, bus, dev, fn, off));
}

void pci_ecam_write32(u64 ecam, u8 bus, u8 dev, u8 fn, u16 off, u32 v)
{
	mmio_write32(ecam_addr(ecam, bus, dev, fn, off), v);
}
