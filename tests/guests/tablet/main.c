/* virtio-input tablet test guest: drives the virtio-input device on PCI (virtio 1.2 §4.1 PCI
 * transport, §2.7 split virtqueues, §5.8 input device) by polling in ring 3. Reads the device
 * name and the ABS_X range from its configuration, posts event buffers and prints each event
 * ("tablet: event type=T code=C value=V") until the left button is released or 30 s pass. */
#include "rvmm.h"
#include "virtio.h"

#define QSIZE 16

VIRTQ_AVAIL(avail, QSIZE);
VIRTQ_USED(used, QSIZE);
struct event { u16 type, code; u32 value; } __attribute__((packed));

static struct virtq_desc dtab[QSIZE] __attribute__((aligned(4096)));
static struct avail avail __attribute__((aligned(4096)));
static struct used used __attribute__((aligned(4096)));
static struct event events[QSIZE];
static struct virtio_pci vp;
static u16 avail_idx;

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
	mmio_write8(vp.device + 0, select);
	mmio_write8(vp.device + 1, subsel);
	return mmio_read8(vp.device + 2);
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
	virtio_pci_find(slot, &vp);
	if (!check(vp.common && vp.notify && vp.device, "missing virtio capability"))
		finish();
	virtio_reset(&vp);
	virtio_set_status(&vp, VIRTIO_ST_ACK | VIRTIO_ST_DRIVER);
	check((virtio_device_features(&vp) & VIRTIO_F_VERSION_1) != 0, "no VERSION_1");
	if (!check(virtio_set_features(&vp, VIRTIO_F_VERSION_1), "features refused"))
		finish();

	char name[129];
	u8 n = cfg_select(1, 0);
	for (u8 i = 0; i < n && i < 128; i++)
		name[i] = (char)mmio_read8(vp.device + 8 + i);
	name[n < 128 ? n : 128] = 0;
	u8 absz = cfg_select(0x12, 0);
	u32 absmax = mmio_read32(vp.device + 8 + 4);
	u8 evabs = cfg_select(0x11, 3) ? mmio_read8(vp.device + 8) : 0;

	u16 max = virtio_queue_select(&vp, 0); /* event queue */
	if (!check(max >= QSIZE, "event queue too small (%u)", max))
		finish();
	u16 notify_off;
	/* Polled: no MSI-X vector. */
	virtio_queue_setup(&vp, QSIZE, 0xffff, dtab, &avail, &used, &notify_off);
	for (u16 i = 0; i < QSIZE; i++) {
		dtab[i] = (struct virtq_desc){(u64)&events[i], sizeof(struct event),
					      VIRTQ_DESC_F_WRITE, 0};
		post(i);
	}
	virtio_set_status(&vp, VIRTIO_ST_ACK | VIRTIO_ST_DRIVER | VIRTIO_ST_FEATURES_OK |
				       VIRTIO_ST_DRIVER_OK);
	virtio_notify(&vp, notify_off, 0);
	printf("tablet: ready name=\"%s\" abs_size=%u abs_max=%u abs_bits=%#x\n", name, absz, absmax, evabs);

	u16 seen = 0;
	int done = 0;
	u64 end = tsc_deadline_ms(30000);
	while (!done && rdtsc() < end) {
		while (*(volatile u16 *)&used.idx != seen) {
			barrier();
			struct virtq_used_elem u = used.ring[seen % QSIZE];
			seen++;
			struct event e = events[u.id % QSIZE];
			printf("tablet: event type=%u code=%#x value=%u len=%u\n", e.type, e.code, e.value, u.len);
			if (e.type == 1 && e.code == 0x110 && e.value == 0)
				done = 1;
			post((u16)(u.id % QSIZE));
			virtio_notify(&vp, notify_off, 0);
		}
		cpu_relax();
	}
	check(done, "no left-button release within 30 s");
	finish();
}
