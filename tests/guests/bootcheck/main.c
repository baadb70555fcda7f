/* Checks what the loader handed over: entry CPU state, the setup header (bzImage/ELF: boot_params)
 * or hvm_start_info (PVH), e820/memmap, command line, initrd contents and placement, ACPI RSDP,
 * and the CMOS memory-size bytes. Universal rules are check()ed; contract-specific values are
 * printed as key=value fields for the test to assert. Optional command-line keys:
 *   expect_initrd_size=N expect_initrd_fnv=0xHASH   initrd size and FNV-1a 32 hash */
#include "rvmm.h"

static int range_in_ram(u64 a, u64 len)
{
	for (int i = 0; i < boot_info.nr_e820; i++) {
		struct e820_entry *e = &boot_info.e820[i];
		if (e->type == E820_RAM && a >= e->addr && a + len <= e->addr + e->size)
			return 1;
	}
	return 0;
}

static int overlaps(u64 a, u64 alen, u64 b, u64 blen)
{
	return a < b + blen && b < a + alen;
}

/* Walk the loader's 4-level page tables at cr3 (read through our identity map). Returns the
 * physical address of va, or ~0 when not mapped. */
static u64 translate(u64 cr3, u64 va)
{
	u64 table = cr3 & 0x000ffffffffff000UL;
	for (int level = 3; level >= 0; level--) {
		u64 e = mmio_read64(table + ((va >> (12 + 9 * level)) & 511) * 8);
		if (!(e & 1))
			return ~0UL;
		u64 addr = e & 0x000ffffffffff000UL;
		if (level > 0 && level < 3 && (e & 0x80)) {
			u64 size = 1UL << (12 + 9 * level);
			return (addr & ~(size - 1)) + (va & (size - 1));
		}
		table = addr;
	}
	return table + (va & 0xfff);
}

static void check_entry_state(void)
{
	struct boot_info *b = &boot_info;
	printf("entry: kind=%s cs=%#lx ds=%#lx ss=%#lx rflags=%#lx cr0=%#lx cr3=%#lx cr4=%#lx efer=%#lx\n",
	       boot_kind_name(b->kind), b->entry_cs, b->entry_ds, b->entry_ss, b->entry_rflags,
	       b->entry_cr0, b->entry_cr3, b->entry_cr4, b->entry_efer);
	check(!(b->entry_rflags & 0x200), "interrupts enabled at entry (rflags=%#lx)", b->entry_rflags);
	check(b->entry_cr0 & 1, "protected mode off at entry (cr0=%#lx)", b->entry_cr0);
	if (b->kind == BOOT_64) {
		check((b->entry_cr0 & 0x80000000) && (b->entry_efer & 0x400),
		      "64-bit entry without paging/long mode active (cr0=%#lx efer=%#lx)", b->entry_cr0,
		      b->entry_efer);
		/* Boot protocol: identity mapping of (at least) the first 4 GiB. */
		static const u64 probes[] = { 0, 0x1000, 0x9f000, 0x100000, 0x200000, 0x3fffffff,
					      0x40000000, 0x80000000, 0xbffff000, 0xc0000000,
					      0xfec00000, 0xfee00000, 0xfffff000 };
		int ok = 1;
		for (unsigned i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
			u64 pa = translate(b->entry_cr3, probes[i]);
			if (pa != probes[i]) {
				check(0, "entry page tables map %#lx to %#lx, not identity", probes[i], pa);
				ok = 0;
			}
		}
		printf("paging: identity_4g=%d\n", ok);
	} else {
		check(!(b->entry_cr0 & 0x80000000), "32-bit entry with paging on (cr0=%#lx)", b->entry_cr0);
	}
}

static void check_setup_header(u64 bp)
{
	printf("setup: boot_flag=%#x header=%.4s version=%#x type_of_loader=%#x loadflags=%#x code32_start=%#x "
	       "initrd_addr_max=%#x cmdline_size=%u\n",
	       bp16(bp, BP_BOOT_FLAG), (const char *)(bp + BP_HEADER), bp16(bp, BP_VERSION),
	       bp8(bp, BP_TYPE_OF_LOADER), bp8(bp, BP_LOADFLAGS), bp32(bp, BP_CODE32_START),
	       bp32(bp, BP_INITRD_ADDR_MAX), bp32(bp, BP_CMDLINE_SIZE));
	check(bp16(bp, BP_BOOT_FLAG) == 0xaa55, "boot_params boot_flag is %#x, not 0xaa55", bp16(bp, BP_BOOT_FLAG));
	check(!memcmp((void *)(bp + BP_HEADER), "HdrS", 4), "boot_params header magic is not HdrS");
	check(bp16(bp, BP_VERSION) == 0x020f, "setup header version changed to %#x", bp16(bp, BP_VERSION));
	/* Running at all means the kernel sits where it was linked; a loader that moved a
	 * relocatable kernel must say so in code32_start. */
	printf("setup: relocatable=%u pref_address=%#lx loaded_at=%#lx\n", bp8(bp, BP_RELOCATABLE),
	       bp64(bp, BP_PREF_ADDRESS), (u64)__image_start);
	check(bp32(bp, BP_CODE32_START) == (u64)__image_start, "code32_start %#x is not the load address %#lx",
	      bp32(bp, BP_CODE32_START), (u64)__image_start);
	check(bp8(bp, BP_TYPE_OF_LOADER) != 0, "type_of_loader not set by the loader");
	check(bp8(bp, BP_LOADFLAGS) & 1, "LOADED_HIGH cleared in loadflags");
	check(bp32(bp, BP_INITRD_ADDR_MAX) == 0x37ffffff, "initrd_addr_max changed to %#x", bp32(bp, BP_INITRD_ADDR_MAX));
	check(range_in_ram(bp, 4096), "boot_params page %#lx is not in e820 RAM", bp);
	check(!overlaps(bp, 4096, (u64)__image_start, (u64)(__image_end - __image_start)),
	      "boot_params %#lx overlaps the kernel image", bp);
}

static void check_e820(void)
{
	struct boot_info *b = &boot_info;
	u64 ram = 0, ram_below_4g = 0, top = 0;
	check(b->nr_e820 > 0, "empty memory map");
	for (int i = 0; i < b->nr_e820; i++) {
		struct e820_entry *e = &b->e820[i];
		printf("e820: addr=%#lx size=%#lx type=%u\n", e->addr, e->size, e->type);
		check(e->size > 0, "e820 entry %d has size 0", i);
		if (i > 0) {
			struct e820_entry *p = &b->e820[i - 1];
			check(e->addr >= p->addr + p->size, "e820 entries %d and %d overlap or are unsorted", i - 1, i);
		}
		if (e->type != E820_RAM)
			continue;
		ram += e->size;
		if (e->addr + e->size > top)
			top = e->addr + e->size;
		if (e->addr < 0x100000000UL) {
			u64 end = e->addr + e->size < 0x100000000UL ? e->addr + e->size : 0x100000000UL;
			ram_below_4g += end - e->addr;
		}
		check(!overlaps(e->addr, e->size, 0x9fc00, 0x100000 - 0x9fc00),
		      "e820 RAM %#lx+%#lx overlaps 0x9fc00-0xfffff (EBDA, VGA, BIOS)", e->addr, e->size);
		check(!overlaps(e->addr, e->size, 0xc0000000UL, 0x40000000UL),
		      "e820 RAM %#lx+%#lx overlaps the 3-4 GiB PCI hole", e->addr, e->size);
	}
	/* RAM above 4 GiB must really be there: write and read back its first and last words. */
	for (int i = 0; i < b->nr_e820; i++) {
		struct e820_entry *e = &b->e820[i];
		if (e->type != E820_RAM || e->addr < 0x100000000UL || e->addr + e->size > (64UL << 30))
			continue;
		u64 first = e->addr, last = e->addr + e->size - 8;
		mmio_write64(first, 0x5a5a0000UL ^ first);
		mmio_write64(last, 0xa5a50000UL ^ last);
		int ok = mmio_read64(first) == (0x5a5a0000UL ^ first) && mmio_read64(last) == (0xa5a50000UL ^ last);
		check(ok, "RAM above 4 GiB at %#lx-%#lx does not hold data", first, last);
		printf("e820: high_ram_probe=%#lx ok=%d\n", first, ok);
	}
	check(b->nr_e820 > 0 && b->e820[0].addr == 0 && b->e820[0].type == E820_RAM,
	      "memory map does not start with RAM at 0");
	check(range_in_ram((u64)__image_start, (u64)(__image_end - __image_start)),
	      "kernel image %#lx-%#lx is not in e820 RAM", (u64)__image_start, (u64)__image_end);
	printf("e820: entries=%d ram=%#lx ram_below_4g=%#lx top=%#lx\n", b->nr_e820, ram, ram_below_4g, top);
}

static void check_cmdline(void)
{
	struct boot_info *b = &boot_info;
	printf("cmdline: %s\n", b->cmdline);
	printf("cmdline_info: addr=%#lx len=%lu fnv1a=%#x\n", b->cmdline_addr, strlen(b->cmdline),
	       fnv1a32(b->cmdline, strlen(b->cmdline)));
	if (!b->cmdline_addr)
		return;
	size_t len = strlen(b->cmdline);
	check(!overlaps(b->cmdline_addr, len + 1, (u64)__image_start, (u64)(__image_end - __image_start)),
	      "command line %#lx overlaps the kernel image", b->cmdline_addr);
	check(range_in_ram(b->cmdline_addr, len + 1), "command line %#lx is not in e820 RAM", b->cmdline_addr);
	if (b->bzimage)
		/* boot.rst: cmdline_size is the maximum length without the terminating NUL. */
		check(len <= bp32(b->ptr, BP_CMDLINE_SIZE), "command line longer than cmdline_size");
}

static void check_initrd(void)
{
	struct boot_info *b = &boot_info;
	char buf[32];
	printf("initrd: addr=%#lx size=%lu\n", b->initrd_addr, b->initrd_size);
	if (cmdline_get(b->cmdline, "expect_initrd_size", buf, sizeof(buf)))
		check(b->initrd_size == parse_u64(buf), "initrd size %lu, expected %s", b->initrd_size, buf);
	if (!b->initrd_size)
		return;
	check(range_in_ram(b->initrd_addr, b->initrd_size), "initrd %#lx+%#lx is not in e820 RAM",
	      b->initrd_addr, b->initrd_size);
	check(!overlaps(b->initrd_addr, b->initrd_size, (u64)__image_start, (u64)(__image_end - __image_start)),
	      "initrd overlaps the kernel image");
	if (b->kind != BOOT_PVH) {
		check(!(b->initrd_addr & 0xfff), "initrd at %#lx is not page aligned", b->initrd_addr);
		u64 max = b->bzimage ? bp32(b->ptr, BP_INITRD_ADDR_MAX) : 0xffffffffUL;
		check(b->initrd_addr + b->initrd_size - 1 <= max, "initrd ends at %#lx, above initrd_addr_max %#lx",
		      b->initrd_addr + b->initrd_size - 1, max);
		check(!overlaps(b->initrd_addr, b->initrd_size, b->ptr, 4096), "initrd overlaps boot_params");
	}
	if (b->cmdline_addr)
		check(!overlaps(b->initrd_addr, b->initrd_size, b->cmdline_addr, strlen(b->cmdline) + 1),
		      "initrd overlaps the command line");
	/* Hashing runs in ring 3, natively even on software-nested KVM. */
	u32 h = fnv1a32((const void *)b->initrd_addr, b->initrd_size);
	printf("initrd: fnv1a=%#x first=%#x\n", h, mmio_read8(b->initrd_addr));
	if (cmdline_get(b->cmdline, "expect_initrd_fnv", buf, sizeof(buf)))
		check(h == (u32)parse_u64(buf), "initrd hash %#x, expected %s", h, buf);
}

static void check_acpi(void)
{
	struct boot_info *b = &boot_info;
	u64 scan = acpi_scan_rsdp();
	printf("acpi: rsdp_boot=%#lx rsdp_scan=%#lx\n", b->rsdp, scan);
	check(scan != 0, "no RSDP found by scanning the EBDA and 0xe0000-0xfffff");
	if (b->rsdp)
		check(!memcmp((void *)b->rsdp, "RSD PTR ", 8) && !acpi_checksum((void *)b->rsdp, 20),
		      "the boot-info RSDP %#lx is not a valid RSDP", b->rsdp);
	if (!acpi_init())
		return;
	printf("acpi: root=%#lx sig=%.4s\n", acpi_root_table, (const char *)acpi_root_table);
	static const char *const sigs[] = { "FACP", "APIC", "DSDT", "MCFG", "HPET" };
	for (unsigned i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		u64 t = acpi_find_table(sigs[i], 0);
		if (t)
			printf("acpi: table=%s addr=%#lx len=%u rev=%u\n", sigs[i], t, mmio_read32(t + 4), mmio_read8(t + 8));
	}
	check(acpi_find_table("FACP", 0) != 0, "no valid FADT");
	check(acpi_find_table("APIC", 0) != 0, "no valid MADT");
	check(acpi_find_table("DSDT", 0) != 0, "no valid DSDT");
	u64 fadt = acpi_find_table("FACP", 0);
	if (fadt) {
		u32 len = mmio_read32(fadt + 4);
		u32 pm_tmr = mmio_read32(fadt + 76);
		u32 flags = len >= 116 ? mmio_read32(fadt + 112) : 0;
		printf("fadt: sci_int=%u pm1a_evt=%#x pm1a_cnt=%#x pm_tmr=%#x flags=%#x s5=%d\n", mmio_read16(fadt + 46),
		       mmio_read32(fadt + 56), mmio_read32(fadt + 64), pm_tmr, flags,
		       acpi_s5_slp_typ(acpi_find_table("DSDT", 0)));
		check(acpi_s5_slp_typ(acpi_find_table("DSDT", 0)) >= 0, "the DSDT has no _S5 object");
		if (len >= 148 && mmio_read64(fadt + 140))
			check(mmio_read64(fadt + 140) == mmio_read32(fadt + 40) || !mmio_read32(fadt + 40),
			      "FADT DSDT and X_DSDT disagree");
		if (pm_tmr) {
			/* An advertised ACPI PM timer (3.579545 MHz) must tick: Linux calibrates with it. */
			u32 t0 = inl((u16)pm_tmr) & 0xffffff;
			delay_us(2000);
			u32 t1 = inl((u16)pm_tmr) & 0xffffff;
			printf("fadt: pm_tmr_delta=%u\n", (t1 - t0) & 0xffffff);
			check(t1 != t0, "the ACPI PM timer at %#x does not tick", pm_tmr);
		}
	}
	struct madt_info m;
	if (!madt_parse(&m)) {
		printf("madt: cpus=%d lapic=%#lx ioapics=%d ioapic=%#lx irq0_gsi=%u\n", m.nr_cpus, m.lapic_addr,
		       m.nr_ioapics, m.ioapic_addr, m.isa_gsi[0]);
		check(m.nr_cpus >= 1, "MADT lists no enabled CPU");
		check(m.lapic_addr == LAPIC_BASE, "MADT LAPIC address %#lx", m.lapic_addr);
	}
}

static u64 read_efer(u64 unused)
{
	(void)unused;
	return rdmsr(0xc0000080);
}

static u8 cmos(u8 reg)
{
	outb(0x70, reg);
	return inb(0x71);
}

int guest_main(void)
{
	printf("bootcheck: kind=%s ptr=%#lx image=%s\n", boot_kind_name(boot_info.kind), boot_info.ptr,
	       boot_info.bzimage ? "bzimage" : "elf");
	check(boot_info.ptr != 0, "no boot structure pointer (RSI/ESI/EBX was 0)");
	check_entry_state();
	/* The library's state: ring 3, long mode (read in ring 0 through ring0_call). */
	u64 efer = ring0_call(read_efer, 0);
	check(cpl() == 3 && (efer & 0x500) == 0x500, "library state: cpl=%d efer=%#lx", cpl(), efer);
	if (boot_info.kind == BOOT_PVH) {
		u64 si = boot_info.ptr;
		printf("pvh: magic=%#x version=%u flags=%#x nr_modules=%u\n", mmio_read32(si), mmio_read32(si + 4),
		       mmio_read32(si + 8), mmio_read32(si + 12));
		check(mmio_read32(si) == 0x336ec578, "hvm_start_info magic is %#x", mmio_read32(si));
		check(mmio_read32(si + 4) >= 1, "hvm_start_info version 0 has no memory map");
	} else if (boot_info.ptr && boot_info.bzimage) {
		check_setup_header(boot_info.ptr);
	} else if (boot_info.ptr) {
		/* ELF: the loader wrote the whole boot_params; only what the kernel reads matters. */
		printf("setup: elf boot_params version=%#x type_of_loader=%#x\n", bp16(boot_info.ptr, BP_VERSION),
		       bp8(boot_info.ptr, BP_TYPE_OF_LOADER));
	}
	check_e820();
	check_cmdline();
	check_initrd();
	check_acpi();
	u32 ext16 = cmos(0x34) | (u32)cmos(0x35) << 8;
	u32 above4g = cmos(0x5b) | (u32)cmos(0x5c) << 8 | (u32)cmos(0x5d) << 16;
	printf("cmos: mem_above_16m_64k=%u mem_above_4g_64k=%u\n", ext16, above4g);
	finish();
}
