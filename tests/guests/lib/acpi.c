/* ACPI table discovery (RSDP scan, XSDT/RSDT walk), MADT parsing and the DSDT's _S5 object. */
#include "rvmm.h"

u64 acpi_root_table;
static u64 acpi_rsdp;
static int root_entry_size;

u8 acpi_checksum(const void *p, size_t n)
{
	const u8 *b = p;
	u8 s = 0;
	for (size_t i = 0; i < n; i++)
		s += b[i];
	return s;
}

static int rsdp_valid(u64 a)
{
	if (memcmp((void *)a, "RSD PTR ", 8) || acpi_checksum((void *)a, 20))
		return 0;
	if (mmio_read8(a + 15) >= 2) {
		u32 len = mmio_read32(a + 20);
		if (len < 36 || len > 4096 || acpi_checksum((void *)a, len))
			return 0;
	}
	return 1;
}

u64 acpi_scan_rsdp(void)
{
	u64 ebda = (u64)mmio_read16(0x40e) << 4;
	if (ebda >= 0x80000 && ebda < 0xa0000)
		for (u64 a = ebda; a < ebda + 1024; a += 16)
			if (rsdp_valid(a))
				return a;
	for (u64 a = 0xe0000; a < 0x100000; a += 16)
		if (rsdp_valid(a))
			return a;
	return 0;
}

static int table_ok(u64 t)
{
	if (!t)
		return 0;
	u32 len = mmio_read32(t + 4);
	if (len < 36 || len > (16 << 20))
		return 0;
	return acpi_checksum((void *)t, len) == 0;
}

u64 acpi_init(void)
{
	u64 r = boot_info.rsdp && rsdp_valid(boot_info.rsdp) ? boot_info.rsdp : acpi_scan_rsdp();
	acpi_rsdp = r;
	acpi_root_table = 0;
	if (!r)
		return 0;
	u64 xsdt = mmio_read8(r + 15) >= 2 ? mmio_read64(r + 24) : 0;
	if (xsdt && table_ok(xsdt) && !memcmp((void *)xsdt, "XSDT", 4)) {
		acpi_root_table = xsdt;
		root_entry_size = 8;
	} else {
		u64 rsdt = mmio_read32(r + 16);
		if (rsdt && table_ok(rsdt) && !memcmp((void *)rsdt, "RSDT", 4)) {
			acpi_root_table = rsdt;
			root_entry_size = 4;
		}
	}
	return r;
}

u64 acpi_find_table(const char *sig, int n)
{
	if (!acpi_rsdp)
		acpi_init();
	if (!acpi_root_table)
		return 0;
	if (!memcmp(sig, "DSDT", 4)) {
		u64 fadt = acpi_find_table("FACP", 0);
		if (!fadt)
			return 0;
		u32 len = mmio_read32(fadt + 4);
		u64 d = len >= 148 ? mmio_read64(fadt + 140) : 0;
		if (!d)
			d = mmio_read32(fadt + 40);
		if (!table_ok(d)) {
			printf("acpi: DSDT at %#lx has a bad header or checksum\n", d);
			return 0;
		}
		return d;
	}
	u32 len = mmio_read32(acpi_root_table + 4);
	int count = (int)((len - 36) / root_entry_size);
	for (int i = 0; i < count; i++) {
		u64 ea = acpi_root_table + 36 + (u64)i * root_entry_size;
		u64 t = root_entry_size == 8 ? mmio_read64(ea) : mmio_read32(ea);
		if (!t || memcmp((void *)t, sig, 4))
			continue;
		if (!table_ok(t)) {
			printf("acpi: table %.4s at %#lx has a bad length or checksum\n", sig, t);
			continue;
		}
		if (n-- == 0)
			return t;
	}
	return 0;
}

int acpi_s5_slp_typ(u64 dsdt)
{
	if (!dsdt)
		return -1;
	u32 len = mmio_read32(dsdt + 4);
	const u8 *p = (const u8 *)dsdt;
	for (u32 i = 36; i + 8 < len; i++) {
		if (memcmp(p + i, "_S5_", 4))
			continue;
		/* NameOp, optionally followed by the root prefix, then the name */
		if (!(p[i - 1] == 0x08 || (p[i - 1] == '\\' && p[i - 2] == 0x08)))
			continue;
		u32 j = i + 4;
		if (p[j++] != 0x12) /* PackageOp */
			continue;
		j += 1 + (p[j] >> 6); /* PkgLength: lead byte plus 0-3 more */
		j++;                  /* NumElements */
		if (j >= len)
			return -1;
		switch (p[j]) {
		case 0x00: return 0;           /* ZeroOp */
		case 0x01: return 1;           /* OneOp */
		case 0x0a: return p[j + 1];    /* BytePrefix */
		case 0x0b: return p[j + 1];    /* WordPrefix (low byte; values are 0-7) */
		default: return p[j] <= 7 ? p[j] : -1;
		}
	}
	return -1;
}

int madt_parse(struct madt_info *m)
{
	memset(m, 0, sizeof(*m));
	for (int i = 0; i < 16; i++)
		m->isa_gsi[i] = i;
	u64 t = acpi_find_table("APIC", 0);
	if (!t)
		return -1;
	u32 len = mmio_read32(t + 4);
	m->lapic_addr = mmio_read32(t + 36);
	for (u32 off = 44; off + 2 <= len;) {
		u64 e = t + off;
		u8 type = mmio_read8(e), elen = mmio_read8(e + 1);
		if (elen < 2 || off + elen > len) {
			printf("madt: malformed entry at offset %u (type %u length %u)\n", off, type, elen);
			break;
		}
		if (type == 0 && elen >= 8) {
			if ((mmio_read32(e + 4) & 1) && m->nr_cpus < 256)
				m->apic_ids[m->nr_cpus++] = mmio_read8(e + 3);
		} else if (type == 1 && elen >= 12) {
			if (m->nr_ioapics++ == 0) {
				m->ioapic_addr = mmio_read32(e + 4);
				m->ioapic_gsi_base = mmio_read32(e + 8);
			}
		} else if (type == 2 && elen >= 10) {
			u8 src = mmio_read8(e + 3);
			if (src < 16) {
				m->isa_gsi[src] = mmio_read32(e + 4);
				m->isa_flags[src] = mmio_read16(e + 8);
			}
		} else if (type == 5 && elen >= 12) {
			m->lapic_addr = mmio_read64(e + 4);
		} else if (type == 9 && elen >= 16) {
			if ((mmio_read32(e + 8) & 1) && m->nr_cpus < 256)
				m->apic_ids[m->nr_cpus++] = mmio_read32(e + 4);
		}
		off += elen;
	}
	return 0;
}

void acpi_poweroff(void)
{
	u64 fadt = acpi_find_table("FACP", 0);
	if (!fadt) {
		printf("poweroff: no FADT\n");
		return;
	}
	u32 len = mmio_read32(fadt + 4);
	u32 flags = len >= 116 ? mmio_read32(fadt + 112) : 0;
	u32 pm1a_cnt = mmio_read32(fadt + 64);
	if (!pm1a_cnt && len >= 184)
		pm1a_cnt = (u32)mmio_read64(fadt + 176); /* X_PM1a_CNT_BLK address (I/O space) */
	u32 smi_cmd = mmio_read32(fadt + 48);
	u8 acpi_enable = mmio_read8(fadt + 52);
	int typ = acpi_s5_slp_typ(acpi_find_table("DSDT", 0));
	printf("poweroff: pm1a_cnt=%#x slp_typ=%d smi_cmd=%#x hw_reduced=%u\n", pm1a_cnt, typ, smi_cmd,
	       (flags >> 20) & 1);
	if (typ < 0) {
		printf("poweroff: no _S5 object in the DSDT\n");
		return;
	}
	if (pm1a_cnt) {
		/* ACPI mode (SCI_EN) first, through SMI_CMD when the platform has one. */
		if (!(inw(pm1a_cnt) & 1) && smi_cmd && acpi_enable) {
			outb(smi_cmd, acpi_enable);
			u64 end = tsc_deadline_ms(1000);
			while (!(inw(pm1a_cnt) & 1) && rdtsc() < end)
				cpu_relax();
		}
		printf("poweroff: writing SLP_TYP|SLP_EN to PM1a_CNT\n");
		outw(pm1a_cnt, (u16)((typ << 10) | (1 << 13)));
	} else if (len >= 256 && mmio_read64(fadt + 248)) {
		u8 space = mmio_read8(fadt + 244);
		u64 reg = mmio_read64(fadt + 248);
		u8 v = (u8)(((typ & 7) << 2) | (1 << 5));
		printf("poweroff: writing SLP_TYP|SLP_EN to the sleep control register\n");
		if (space == 1)
			outb((u16)reg, v);
		else
			mmio_write8(reg, v);
	} else {
		printf("poweroff: FADT has neither PM1a_CNT nor a sleep control register\n");
		return;
	}
	delay_us(1000000);
}
