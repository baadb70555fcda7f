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
