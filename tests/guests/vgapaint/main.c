/* std-VGA test guest: finds the Bochs VGA (1234:1111) on PCI, checks that boot_params.screen_info
 * (VIDEO_TYPE_VLFB) describes its BAR0, paints a known pattern into the linear framebuffer and
 * waits, so the test can look at the screen through VNC. With `text=1` on the command line it
 * instead leaves the graphics mode (DISPI disabled) and writes a line into the 80x25 text buffer
 * at 0xB8000. With `move=ADDR` it first moves BAR0 to ADDR (decoding off while it does) and
 * paints there.
 *
 * Pattern at (x, y): red = x & 0xff, green = y & 0xff, blue = 0x40 in the left half and 0xc0 in the
 * right half (XRGB8888). */
#include "rvmm.h"

#define SI_ISVGA 0x0f
#define SI_WIDTH 0x12
#define SI_HEIGHT 0x14
#define SI_DEPTH 0x16
#define SI_BASE 0x18
#define SI_LINELEN 0x24
#define VIDEO_TYPE_VLFB 0x23

static u16 dispi_read(u16 idx)
{
	outw(0x1ce, idx);
	return inw(0x1cf);
}

static void dispi_write(u16 idx, u16 v)
{
	outw(0x1ce, idx);
	outw(0x1cf, v);
}

static void paint_text(void)
{
	dispi_write(4, 0); /* DISPI off: the legacy text screen shows */
	volatile u16 *cells = (volatile u16 *)0xb8000;
	for (int i = 0; i < 80 * 25; i++)
		cells[i] = 0x0720;
	const char *msg = "RVMM TEXT MODE OK";
	for (int i = 0; msg[i]; i++)
		cells[80 * 2 + 4 + i] = (u16)(0x1f00 | (u8)msg[i]); /* white on blue, row 2, col 4 */
	printf("vgapaint: text written\n");
}

int guest_main(void)
{
	int slot = -1;
	for (u8 dev = 0; dev < 32; dev++) {
		if (pci_cfg_read32(0, dev, 0, 0) == 0x11111234) {
			slot = dev;
			break;
		}
	}
	if (!check(slot >= 0, "no std-VGA (1234:1111) on PCI bus 0"))
		finish();
	u32 class = pci_cfg_read32(0, slot, 0, 8) >> 8;
	u16 cmd = pci_cfg_read16(0, slot, 0, 4);
	u64 bar0 = pci_cfg_read32(0, slot, 0, 0x10) & ~0xfull;
	u64 bar2 = pci_cfg_read32(0, slot, 0, 0x18) & ~0xfull;
	u16 id = dispi_read(0);
	printf("vgapaint: slot=%d class=%06x cmd=%#x bar0=%#lx bar2=%#lx dispi_id=%#x\n", slot, class,
	       cmd, bar0, bar2, id);
	check(class == 0x030000, "class is %06x, not 030000", class);
	check(cmd & 2, "memory decoding is off");
	check((id & 0xfff0) == 0xb0c0, "DISPI ID %#x", id);
	/* BAR2 mirrors the DISPI registers at 0x500 (index * 2). */
	check(mmio_read16(bar2 + 0x500) == id, "BAR2 DISPI ID differs");

	u64 bp = boot_info.ptr;
	u8 type = bp8(bp, SI_ISVGA);
	u32 w = bp16(bp, SI_WIDTH), h = bp16(bp, SI_HEIGHT), depth = bp16(bp, SI_DEPTH);
	u64 base = bp32(bp, SI_BASE);
	u32 line = bp16(bp, SI_LINELEN);
	printf("vgapaint: si type=%#x base=%#lx width=%u height=%u depth=%u line=%u\n", type, base, w,
	       h, depth, line);
	u32 dw = dispi_read(1), dh = dispi_read(2), dbpp = dispi_read(3);
	printf("vgapaint: dispi xres=%u yres=%u bpp=%u enable=%#x\n", dw, dh, dbpp, dispi_read(4));
	if (!check(type == VIDEO_TYPE_VLFB && base == bar0 && depth == 32 && line >= w * 4,
		   "screen_info does not describe BAR0 as a 32 bpp framebuffer"))
		finish();
	check(dw == w && dh == h && dbpp == 32, "DISPI mode differs from screen_info");

	char arg[24];
	if (cmdline_get(boot_info.cmdline, "move", arg, sizeof(arg))) {
		u64 to = parse_u64(arg);
		pci_cfg_write32(0, slot, 0, 4, cmd & ~2u);
		pci_cfg_write32(0, slot, 0, 0x10, (u32)to);
		pci_cfg_write32(0, slot, 0, 4, cmd);
		base = pci_cfg_read32(0, slot, 0, 0x10) & ~0xfull;
		printf("vgapaint: moved bar0=%#lx\n", base);
	}
	if (cmdline_get(boot_info.cmdline, "text", arg, sizeof(arg))) {
		paint_text();
	} else {
		for (u32 y = 0; y < h; y++) {
			volatile u32 *row = (volatile u32 *)(base + (u64)y * line);
			for (u32 x = 0; x < w; x++)
				row[x] = ((x & 0xff) << 16) | ((y & 0xff) << 8) | (x < w / 2 ? 0x40 : 0xc0);
		}
		printf("vgapaint: painted %ux%u\n", w, h);
	}
	/* Stay up until the test has looked at the screen (it ends rvmm); give up after 60 s. */
	u64 end = tsc_deadline_ms(60000);
	while (rdtsc() < end)
		cpu_relax();
	printf("vgapaint: timeout\n");
	finish();
}
