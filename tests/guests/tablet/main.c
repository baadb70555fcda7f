/* virtio-input tablet test guest: drives the virtio-input device on PCI (virtio 1.2 §4.1 PCI
 * transport, §2.7 split virtqueues, §5.8 input device) by polling in ring 3. Reads the device
 * name and the ABS_X range from its configuration, posts event buffers and prints each event
 * ("tablet: event type=T code=C value=V") until the left button is released or 30 s pass. */
#include "rvmm.h"

#define CAP_VENDOR 0x09
#define CFG_COMMON 1
#define CFG_NOTIFY 2
#define CFG_DEVICE 4
#define ST_ACK 1
#define ST_DRIVER 2
#define ST_DRIVER_OK 4
#define ST_FEATURES_OK 8
#define QSIZE 16
#define D_WRITE 2

struct desc { u64 addr; u32 len; u16 flags, next; } __attribute__((packed));
struct avail { u16 flags, idx, ring[QSIZE], used_event; } __attribute__((packed));
struct used_elem { u32 id, len; } __attribute__((packed));
struct used { u16 flags, idx; struct used_elem ring[QSIZE]; u16 avail_event; } __attribute__((packed));
struct event { u16 type, code; u32 value; } __attribute__((packed));

static struct desc dtab[QSIZE] __attribute__((aligned(4096)));
static struct avail avail __attribute__((aligned(4096)));
static struct used used __attribute__((aligned(4096)));
static struct event events[QSIZE];
static u64 common, notify, device;
static u32 notify_mult;
static u16 avail_idx;

static u64 bar_addr(u8 dev, int bar)
{
	u32 lo = pci_cfg_read32(0, dev, 0, 0x10 + 4 * bar);
	u64 a = lo & ~0xful;
	if ((lo & 6) == 4)
		a |= (u64)pci_cfg_read32(0, dev, 0, 0x14 + 4 * bar) << 32;
	return a;
}

static void post(u16 d)
{
	avail.ring[avail_idx % QSIZE] = d;
	barrier();
	avail.idx = ++avail_idx;
	barrier();
}

/* Select a configuration item; returns its size. */
static u8 cfg_select(u8 select, u8 subsel)
{
	mmio_write8(device + 0, select);
	mmio_write8(device + 1, subsel);
	return mmio_read8(device + 2);
}

int guest_main(void)
{
	int slot = -1;
	for (u8 d = 0; d < 32; d++)
		if (pci_cfg_read32(0, d, 0, 0) == ((0x1040u + 18) << 16 | 0x1af4)) {
			slot = d;
			break;
		}
	if (!check(slot >= 0, "no virtio-input device on PCI bus 0"))
		finish();
	u32 cmd = pci_cfg_read32(0, slot, 0, 4);
	pci_cfg_write32(0, slot, 0, 4, (cmd & 0xffff) | 0x6);
	for (u8 p = pci_cfg_read8(0, slot, 0, 0x34) & 0xfc; p; p = pci_cfg_read8(0, slot, 0, p + 1) & 0xfc) {
		if (pci_cfg_read8(0, slot, 0, p) != CAP_VENDOR)
			continue;
		u8 type = pci_cfg_read8(0, slot, 0, p + 3), bar = pci_cfg_read8(0, slot, 0, p + 4);
		if (bar > 5)
			continue;
		u64 a = bar_addr(slot, bar) + pci_cfg_read32(0, slot, 0, p + 8);
		if (type == CFG_COMMON && !common)
			common = a;
		if (type == CFG_NOTIFY && !notify) {
			notify = a;
			notify_mult = pci_cfg_read32(0, slot, 0, p + 16);
		}
		if (type == CFG_DEVICE && !device)
			device = a;
	}
	if (!check(common && notify && device, "missing virtio capability"))
		finish();
	mmio_write8(common + 0x14, 0);
	mmio_write8(common + 0x14, ST_ACK | ST_DRIVER);
	mmio_write32(common + 0x00, 1);
	u32 hi = mmio_read32(common + 0x04);
	check(hi & 1, "no VERSION_1");
	mmio_write32(common + 0x08, 0);
	mmio_write32(common + 0x0c, 0);
	mmio_write32(common + 0x08, 1);
	mmio_write32(common + 0x0c, 1);
	mmio_write8(common + 0x14, ST_ACK | ST_DRIVER | ST_FEATURES_OK);
	if (!check(mmio_read8(common + 0x14) & ST_FEATURES_OK, "features refused"))
		finish();

	char name[129];
	u8 n = cfg_select(1, 0);
	for (u8 i = 0; i < n && i < 128; i++)
		name[i] = (char)mmio_read8(device + 8 + i);
	name[n < 128 ? n : 128] = 0;
	u8 absz = cfg_select(0x12, 0);
	u32 absmax = mmio_read32(device + 8 + 4);
	u8 evabs = cfg_select(0x11, 3) ? mmio_read8(device + 8) : 0;

	mmio_write16(common + 0x16, 0); /* event queue */
	u16 max = mmio_read16(common + 0x18);
	if (!check(max >= QSIZE, "event queue too small (%u)", max))
		finish();
	mmio_write16(common + 0x18, QSIZE);
	mmio_write16(common + 0x1a, 0xffff); /* polled: no MSI-X vector */
	mmio_write32(common + 0x20, (u32)(u64)dtab);
	mmio_write32(common + 0x24, (u32)((u64)dtab >> 32));
	mmio_write32(common + 0x28, (u32)(u64)&avail);
	mmio_write32(common + 0x2c, (u32)((u64)&avail >> 32));
	mmio_write32(common + 0x30, (u32)(u64)&used);
	mmio_write32(common + 0x34, (u32)((u64)&used >> 32));
	u16 notify_off = mmio_read16(common + 0x1e);
	mmio_write16(common + 0x1c, 1);
	for (u16 i = 0; i < QSIZE; i++) {
		dtab[i] = (struct desc){(u64)&events[i], sizeof(struct event), D_WRITE, 0};
		post(i);
	}
	mmio_write8(common + 0x14, ST_ACK | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK);
	mmio_write16(notify + (u64)notify_off * notify_mult, 0);
	printf("tablet: ready name=\"%s\" abs_size=%u abs_max=%u abs_bits=%#x\n", name, absz, absmax, evabs);

	u16 seen = 0;
	int done = 0;
	u64 end = tsc_deadline_ms(30000);
	while (!done && rdtsc() < end) {
		while (*(volatile u16 *)&used.idx != seen) {
			barrier();
			struct used_elem u = used.ring[seen % QSIZE];
			seen++;
			struct event e = events[u.id % QSIZE];
			printf("tablet: event type=%u code=%#x value=%u len=%u\n", e.type, e.code, e.value, u.len);
			if (e.type == 1 && e.code == 0x110 && e.value == 0)
				done = 1;
			post((u16)(u.id % QSIZE));
			mmio_write16(notify + (u64)notify_off * notify_mult, 0);
		}
		cpu_relax();
	}
	check(done, "no left-button release within 30 s");
	finish();
}
