/* The installer stand-in that `rvmm --cdrom` boots from an ISO: reports the command line and
 * initrd it was given, then reads the CD through a virtio-scsi host on PCI, driven from the
 * virtio 1.2 specification (§4.1 PCI transport, §2.7 split virtqueues, §5.6 SCSI host) and
 * the SCSI/MMC command set (SPC INQUIRY, TEST UNIT READY, READ CAPACITY(10), READ(10)), by
 * polling in ring 3.
 *
 * Output: "cdcheck: cmdline: <text>", "cdcheck: initrd size=N fnv=0x…", "cdcheck: found …",
 * "cdcheck: inquiry type=N", "cdcheck: capacity blocks=N block_size=N",
 * "cdcheck: label: <volume id>" (the primary volume descriptor at sector 16, trailing blanks
 * removed), "cdcheck: msix interrupts=N" (completions also signal MSI-X vector 0 to the BSP). */
#include "rvmm.h"
#include "virtio.h"

#define VIRTIO_SCSI_MODERN 0x1048

#define REQUEST_QUEUE 2
#define QSIZE 8

#define CDB_SIZE 32
#define SENSE_SIZE 96

VIRTQ_AVAIL(avail, QSIZE);
VIRTQ_USED(used, QSIZE);
/* virtio_scsi_req_cmd and virtio_scsi_resp_cmd with the default CDB and sense sizes. */
struct req_cmd { u8 lun[8]; u64 id; u8 task_attr, prio, crn; u8 cdb[CDB_SIZE]; } __attribute__((packed));
struct resp_cmd { u32 sense_len, resid; u16 status_qualifier; u8 status, response; u8 sense[SENSE_SIZE]; } __attribute__((packed));

static struct virtq_desc dtab[QSIZE] __attribute__((aligned(4096)));
static struct avail avail __attribute__((aligned(4096)));
static struct used used __attribute__((aligned(4096)));
static struct req_cmd req;
static struct resp_cmd resp;
static u8 data[2048] __attribute__((aligned(4096)));

#define MSI_VECTOR 0x50
static volatile u32 msi_count;

static void on_msi(struct irq_frame *f)
{
	(void)f;
	msi_count++;
	lapic_eoi();
}

/* Point MSI-X table entry 0 at this CPU's LAPIC with MSI_VECTOR and enable MSI-X. */
static int msix_setup(u8 dev)
{
	for (u8 p = pci_cfg_read8(0, dev, 0, 0x34) & 0xfc; p; p = pci_cfg_read8(0, dev, 0, p + 1) & 0xfc) {
		if (pci_cfg_read8(0, dev, 0, p) != 0x11)
			continue;
		u32 tbl = pci_cfg_read32(0, dev, 0, p + 4);
		u64 t = pci_bar_addr(dev, tbl & 7) + (tbl & ~7u);
		mmio_write32(t + 0, 0xfee00000u | (lapic_id() << 12));
		mmio_write32(t + 4, 0);
		mmio_write32(t + 8, MSI_VECTOR);
		mmio_write32(t + 12, 0); /* unmasked */
		u32 ctl = pci_cfg_read32(0, dev, 0, p);
		pci_cfg_write32(0, dev, 0, p, (ctl | (1u << 31)) & ~(1u << 30));
		return 1;
	}
	return 0;
}

static struct virtio_pci vp;
static u16 notify_off, avail_idx, last_used;
static u64 next_id = 1;

/* Send `cdb` to target 0 LUN 0 with `len` bytes of data-in; returns the SCSI status, or -1
 * when the request failed at the virtio-scsi level (response code printed). */
static int scsi(const u8 *cdb, u32 cdb_len, u32 len)
{
	memset(&req, 0, sizeof(req));
	memset(&resp, 0, sizeof(resp));
	req.lun[0] = 1;     /* single-level LUN structure: target 0 … */
	req.lun[2] = 0x40;  /* … flat-space LUN 0 */
	req.id = next_id++;
	memcpy(req.cdb, cdb, cdb_len);
	resp.response = 0xff;
	dtab[0] = (struct virtq_desc){(u64)&req, sizeof(req), VIRTQ_DESC_F_NEXT, 1};
	dtab[1] = (struct virtq_desc){(u64)&resp, sizeof(resp),
				      (u16)(VIRTQ_DESC_F_WRITE | (len ? VIRTQ_DESC_F_NEXT : 0)), 2};
	dtab[2] = (struct virtq_desc){(u64)data, len, VIRTQ_DESC_F_WRITE, 0};
	avail.ring[avail_idx % QSIZE] = 0;
	barrier();
	avail.idx = ++avail_idx;
	barrier();
	virtio_notify(&vp, notify_off, REQUEST_QUEUE);
	u64 deadline = tsc_deadline_ms(2000);
	while (*(volatile u16 *)&used.idx == last_used) {
		if (rdtsc() > deadline) {
			printf("cdcheck: request %#x timed out\n", cdb[0]);
			return -1;
		}
		cpu_relax();
	}
	barrier();
	last_used++;
	if (resp.response != 0) {
		printf("cdcheck: command %#x: virtio-scsi response %u\n", cdb[0], resp.response);
		return -1;
	}
	return resp.status;
}

static int setup(u8 dev)
{
	virtio_pci_find(dev, &vp);
	if (!check(vp.common && vp.notify, "missing virtio capability"))
		return -1;
	virtio_reset(&vp);
	int msix = msix_setup(dev);
	check(msix, "no MSI-X capability");
	virtio_set_status(&vp, VIRTIO_ST_ACK);
	virtio_set_status(&vp, VIRTIO_ST_ACK | VIRTIO_ST_DRIVER);
	virtio_write16(&vp, VIRTIO_MSIX_CONFIG, 0xffff); /* no config-change interrupts */
	u64 feat = virtio_device_features(&vp);
	if (!check((feat & VIRTIO_F_VERSION_1) != 0, "device does not offer VERSION_1"))
		return -1;
	if (!check(virtio_set_features(&vp, VIRTIO_F_VERSION_1), "device refused VERSION_1 alone"))
		return -1;
	u16 nq = virtio_read16(&vp, VIRTIO_NUM_QUEUES);
	if (!check(nq > REQUEST_QUEUE, "only %u queues", nq))
		return -1;
	u16 max = virtio_queue_select(&vp, REQUEST_QUEUE);
	if (!check(max >= QSIZE, "request queue too small (%u)", max))
		return -1;
	/* We poll, but the completions also raise MSI-X vector 0, which we count. */
	virtio_queue_setup(&vp, QSIZE, msix ? 0 : 0xffff, dtab, &avail, &used, &notify_off);
	check(!msix || virtio_read16(&vp, VIRTIO_Q_MSIX_VECTOR) == 0,
	      "the device refused MSI-X vector 0 for the request queue");
	virtio_set_status(&vp, VIRTIO_ST_ACK | VIRTIO_ST_DRIVER | VIRTIO_ST_FEATURES_OK |
				       VIRTIO_ST_DRIVER_OK);
	return check(!(virtio_status(&vp) & VIRTIO_ST_NEEDS_RESET), "device needs reset after DRIVER_OK")
		       ? 0
		       : -1;
}

static u32 be32(const u8 *p) { return (u32)p[0] << 24 | (u32)p[1] << 16 | (u32)p[2] << 8 | p[3]; }

int guest_main(void)
{
	printf("cdcheck: cmdline: %s\n", boot_info.cmdline);
	u32 fnv = 0;
	if (boot_info.initrd_size)
		fnv = fnv1a32((const void *)boot_info.initrd_addr, boot_info.initrd_size);
	printf("cdcheck: initrd size=%lu fnv=%#x\n", boot_info.initrd_size, fnv);

	u8 dev = 0xff;
	for (u8 d = 0; d < 32 && dev == 0xff; d++) {
		u32 id = pci_cfg_read32(0, d, 0, 0);
		if ((id & 0xffff) == VIRTIO_VENDOR && (id >> 16) == VIRTIO_SCSI_MODERN) {
			dev = d;
			printf("cdcheck: found 00:%02x.0 class=%#x\n", d, pci_cfg_read32(0, d, 0, 8) >> 8);
		}
	}
	if (!check(dev != 0xff, "no virtio-scsi host on bus 0"))
		finish();
	lapic_enable();
	set_irq_handler(MSI_VECTOR, on_msi);
	if (setup(dev) < 0)
		finish();
	irq_enable();

	u8 inquiry[6] = {0x12, 0, 0, 0, 36, 0};
	if (check(scsi(inquiry, 6, 36) == 0, "INQUIRY failed"))
		printf("cdcheck: inquiry type=%u removable=%u\n", data[0] & 0x1f, data[1] >> 7);
	/* A fresh drive may report a unit attention (medium changed) first. */
	u8 tur[6] = {0};
	int st = -1;
	for (int i = 0; i < 4 && st != 0; i++)
		st = scsi(tur, 6, 0);
	check(st == 0, "TEST UNIT READY never succeeded (status %d)", st);
	u8 cap10[10] = {0x25};
	if (check(scsi(cap10, 10, 8) == 0, "READ CAPACITY failed"))
		printf("cdcheck: capacity blocks=%u block_size=%u\n", be32(data) + 1, be32(data + 4));
	u8 read10[10] = {0x28, 0, 0, 0, 0, 16, 0, 0, 1, 0};
	memset(data, 0, sizeof(data));
	if (check(scsi(read10, 10, 2048) == 0, "READ(10) of sector 16 failed")) {
		check(data[0] == 1 && memcmp(data + 1, "CD001", 5) == 0, "sector 16 is no primary volume descriptor");
		char label[33];
		memcpy(label, data + 40, 32);
		int n = 32;
		while (n > 0 && (label[n - 1] == ' ' || label[n - 1] == 0))
			n--;
		label[n] = 0;
		printf("cdcheck: label: %s\n", label);
	}
	/* Past the last block: the drive must refuse. */
	u8 beyond[10] = {0x28, 0, 0x7f, 0xff, 0xff, 0xff, 0, 0, 1, 0};
	check(scsi(beyond, 10, 2048) == 2, "READ(10) past the end did not give CHECK CONDITION");
	/* Interrupts may trail the used-ring update we polled for. */
	u64 deadline = tsc_deadline_ms(500);
	while (msi_count == 0 && rdtsc() < deadline)
		cpu_relax();
	irq_disable();
	printf("cdcheck: msix interrupts=%u\n", msi_count);
	check(msi_count > 0, "no MSI-X interrupt for completed requests");
	virtio_set_status(&vp, 0);
	finish();
}
