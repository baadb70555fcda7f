/* Normalise what the loader handed over (boot_params or hvm_start_info) into boot_info. */
#include "rvmm.h"

struct boot_info boot_info;
extern u64 boot_ptr, boot_kind, saved_cs, saved_ds, saved_ss, saved_rflags, saved_cr0,
	saved_cr3, saved_cr4, saved_efer;

#define PVH_MAGIC 0x336ec578

const char *boot_kind_name(int kind)
{
	switch (kind) {
	case BOOT_BZIMAGE32: return "bzimage32";
	case BOOT_64: return "64bit";
	case BOOT_PVH: return "pvh";
	}
	return "unknown";
}

static void parse_boot_params(struct boot_info *b, u64 bp)
{
	b->cmdline_addr = bp32(bp, BP_CMD_LINE_PTR) | ((u64)bp32(bp, BP_EXT_CMD_LINE_PTR) << 32);
	b->initrd_addr = bp32(bp, BP_RAMDISK_IMAGE) | ((u64)bp32(bp, BP_EXT_RAMDISK_IMAGE) << 32);
	b->initrd_size = bp32(bp, BP_RAMDISK_SIZE) | ((u64)bp32(bp, BP_EXT_RAMDISK_SIZE) << 32);
	b->rsdp = bp64(bp, BP_ACPI_RSDP_ADDR);
	int n = bp8(bp, BP_E820_ENTRIES);
	b->nr_e820 = n > MAX_E820 ? MAX_E820 : n;
	for (int i = 0; i < b->nr_e820; i++) {
		u64 e = bp + BP_E820_TABLE + 20 * (u64)i; /* packed: addr, size, type */
		b->e820[i].addr = *(volatile u64 *)e;
		b->e820[i].size = *(volatile u64 *)(e + 8);
		b->e820[i].type = *(volatile u32 *)(e + 16);
	}
}

static void parse_start_info(struct boot_info *b, u64 si)
{
	if (mmio_read32(si) != PVH_MAGIC)
		return;
	u32 version = mmio_read32(si + 4);
	u32 nr_modules = mmio_read32(si + 12);
	u64 modlist = mmio_read64(si + 16);
	b->cmdline_addr = mmio_read64(si + 24);
	b->rsdp = mmio_read64(si + 32);
	if (nr_modules && modlist) {
		b->initrd_addr = mmio_read64(modlist);
		b->initrd_size = mmio_read64(modlist + 8);
	}
	if (version >= 1) {
		u64 map = mmio_read64(si + 40);
		u32 n = mmio_read32(si + 48);
		b->nr_e820 = n > MAX_E820 ? MAX_E820 : (int)n;
		for (int i = 0; i < b->nr_e820; i++) {
			u64 e = map + 24 * (u64)i; /* addr, size, type, reserved */
			b->e820[i].addr = mmio_read64(e);
			b->e820[i].size = mmio_read64(e + 8);
			b->e820[i].type = mmio_read32(e + 16);
		}
	}
}

extern const char image_is_bzimage[] __attribute__((weak));

void boot_info_parse(void)
{
	struct boot_info *b = &boot_info;
	b->bzimage = image_is_bzimage != NULL;
	b->kind = (int)boot_kind;
	b->ptr = boot_ptr;
	b->entry_cs = saved_cs;
	b->entry_ds = saved_ds;
	b->entry_ss = saved_ss;
	b->entry_rflags = saved_rflags;
	b->entry_cr0 = saved_cr0;
	b->entry_cr3 = saved_cr3;
	b->entry_cr4 = saved_cr4;
	b->entry_efer = saved_efer;
	b->cmdline = "";
	if (!b->ptr)
		return;
	if (b->kind == BOOT_PVH)
		parse_start_info(b, b->ptr);
	else
		parse_boot_params(b, b->ptr);
	if (b->cmdline_addr)
		b->cmdline = (const char *)b->cmdline_addr;
}
