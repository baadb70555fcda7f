/* virtio-pci modern transport: see virtio.h. */
#include "virtio.h"

#define CAP_VENDOR 0x09 /* PCI vendor-specific capability: struct virtio_pci_cap */
#define CFG_COMMON 1
#define CFG_NOTIFY 2
#define CFG_ISR 3
#define CFG_DEVICE 4

u64 pci_bar_addr(u8 dev, int bar)
{
	u32 lo = pci_cfg_read32(0, dev, 0, 0x10 + 4 * bar);
	u64 a = lo & ~0xful;
	if ((lo & 6) == 4)
		a |= (u64)pci_cfg_read32(0, dev, 0, 0x14 + 4 * bar) << 32;
	return a;
}

void virtio_pci_find(u8 dev, struct virtio_pci *v)
{
	memset(v, 0, sizeof(*v));
	v->dev = dev;
	/* Memory decoding and bus mastering (the device DMAs into our rings). */
	u32 cmd = pci_cfg_read32(0, dev, 0, 4);
	pci_cfg_write32(0, dev, 0, 4, (cmd & 0xffff) | 0x6);
	for (u8 p = pci_cfg_read8(0, dev, 0, 0x34) & 0xfc; p; p = pci_cfg_read8(0, dev, 0, p + 1) & 0xfc) {
		if (pci_cfg_read8(0, dev, 0, p) != CAP_VENDOR)
			continue;
		u8 type = pci_cfg_read8(0, dev, 0, p + 3);
		u8 bar = pci_cfg_read8(0, dev, 0, p + 4);
		u32 off = pci_cfg_read32(0, dev, 0, p + 8);
		if (bar > 5)
			continue;
		u64 a = pci_bar_addr(dev, bar) + off;
		if (type == CFG_COMMON && !v->common)
			v->common = a;
		if (type == CFG_ISR && !v->isr)
			v->isr = a;
		if (type == CFG_DEVICE && !v->device)
			v->device = a;
		if (type == CFG_NOTIFY && !v->notify) {
			v->notify = a;
			v->notify_mult = pci_cfg_read32(0, dev, 0, p + 16);
		}
	}
}

u8 virtio_read8(const struct virtio_pci *v, u32 off) { return mmio_read8(v->common + off); }
u16 virtio_read16(const struct virtio_pci *v, u32 off) { return mmio_read16(v->common + off); }
u32 virtio_read32(const struct virtio_pci *v, u32 off) { return mmio_read32(v->common + off); }
void virtio_write8(const struct virtio_pci *v, u32 off, u8 val) { mmio_write8(v->common + off, val); }
void virtio_write16(const struct virtio_pci *v, u32 off, u16 val) { mmio_write16(v->common + off, val); }
void virtio_write32(const struct virtio_pci *v, u32 off, u32 val) { mmio_write32(v->common + off, val); }

/* 64-bit fields as two 32-bit halves, low first (§4.1.3.1 allows either width; this always works). */
void virtio_write64(const struct virtio_pci *v, u32 off, u64 val)
{
	virtio_write32(v, off, (u32)val);
	virtio_write32(v, off + 4, (u32)(val >> 32));
}

u8 virtio_reset(const struct virtio_pci *v)
{
	virtio_set_status(v, 0);
	u64 deadline = tsc_deadline_ms(1000);
	while (virtio_status(v) != 0 && rdtsc() < deadline)
		cpu_relax();
	return virtio_status(v);
}

u64 virtio_device_features(const struct virtio_pci *v)
{
	virtio_write32(v, VIRTIO_DEV_FEATURE_SEL, 0);
	u64 feat = virtio_read32(v, VIRTIO_DEV_FEATURE);
	virtio_write32(v, VIRTIO_DEV_FEATURE_SEL, 1);
	return feat | (u64)virtio_read32(v, VIRTIO_DEV_FEATURE) << 32;
}

int virtio_set_features(const struct virtio_pci *v, u64 drv)
{
	virtio_write32(v, VIRTIO_DRV_FEATURE_SEL, 0);
	virtio_write32(v, VIRTIO_DRV_FEATURE, (u32)drv);
	virtio_write32(v, VIRTIO_DRV_FEATURE_SEL, 1);
	virtio_write32(v, VIRTIO_DRV_FEATURE, (u32)(drv >> 32));
	virtio_set_status(v, VIRTIO_ST_ACK | VIRTIO_ST_DRIVER | VIRTIO_ST_FEATURES_OK);
	return (virtio_status(v) & VIRTIO_ST_FEATURES_OK) != 0;
}

u16 virtio_queue_select(const struct virtio_pci *v, u16 index)
{
	virtio_write16(v, VIRTIO_Q_SELECT, index);
	return virtio_read16(v, VIRTIO_Q_SIZE);
}

int virtio_queue_setup(const struct virtio_pci *v, u16 size, u16 vector, const void *desc,
		       const void *avail, const void *used, u16 *notify_off)
{
	virtio_write16(v, VIRTIO_Q_SIZE, size);
	virtio_write16(v, VIRTIO_Q_MSIX_VECTOR, vector);
	virtio_write64(v, VIRTIO_Q_DESC, (u64)desc);
	virtio_write64(v, VIRTIO_Q_DRIVER, (u64)avail);
	virtio_write64(v, VIRTIO_Q_DEVICE, (u64)used);
	*notify_off = virtio_read16(v, VIRTIO_Q_NOTIFY_OFF);
	virtio_write16(v, VIRTIO_Q_ENABLE, 1);
	return virtio_read16(v, VIRTIO_Q_ENABLE) == 1;
}

void virtio_notify(const struct virtio_pci *v, u16 notify_off, u16 index)
{
	mmio_write16(v->notify + (u64)notify_off * v->notify_mult, index);
}
