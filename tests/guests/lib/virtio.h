/* virtio-pci modern transport for the test guests, from the virtio 1.2 specification (§4.1.4
 * capabilities and common configuration, §3.1 device initialisation, §4.1.5.2 notifications).
 * Polled drivers: no interrupts are set up here. Device-specific features, virtqueue layouts
 * and requests stay in each guest. */
#pragma once
#include "rvmm.h"

#define VIRTIO_VENDOR 0x1af4

/* Device status bits (§2.1). */
#define VIRTIO_ST_ACK 1
#define VIRTIO_ST_DRIVER 2
#define VIRTIO_ST_DRIVER_OK 4
#define VIRTIO_ST_FEATURES_OK 8
#define VIRTIO_ST_NEEDS_RESET 0x40

#define VIRTIO_F_VERSION_1 (1ul << 32)

/* Common configuration registers (struct virtio_pci_common_cfg, §4.1.4.3). */
#define VIRTIO_DEV_FEATURE_SEL 0x00
#define VIRTIO_DEV_FEATURE 0x04
#define VIRTIO_DRV_FEATURE_SEL 0x08
#define VIRTIO_DRV_FEATURE 0x0c
#define VIRTIO_MSIX_CONFIG 0x10
#define VIRTIO_NUM_QUEUES 0x12
#define VIRTIO_STATUS 0x14
#define VIRTIO_Q_SELECT 0x16
#define VIRTIO_Q_SIZE 0x18
#define VIRTIO_Q_MSIX_VECTOR 0x1a
#define VIRTIO_Q_ENABLE 0x1c
#define VIRTIO_Q_NOTIFY_OFF 0x1e
#define VIRTIO_Q_DESC 0x20
#define VIRTIO_Q_DRIVER 0x28
#define VIRTIO_Q_DEVICE 0x30

/* Split virtqueue layout (§2.7): descriptors, and the driver (avail) and device (used) areas of
 * a queue of `n` entries, declared as `struct name` by VIRTQ_AVAIL / VIRTQ_USED. */
struct virtq_desc { u64 addr; u32 len; u16 flags, next; } __attribute__((packed));
struct virtq_used_elem { u32 id, len; } __attribute__((packed));
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTQ_AVAIL(name, n) struct name { u16 flags, idx, ring[n], used_event; } __attribute__((packed))
#define VIRTQ_USED(name, n)                                                                        \
	struct name { u16 flags, idx; struct virtq_used_elem ring[n]; u16 avail_event; }              \
	__attribute__((packed))

/* One virtio-pci function on bus 0: where its configuration structures are mapped. */
struct virtio_pci {
	u8 dev;
	u64 common, notify, isr, device; /* 0 where the capability is missing */
	u32 notify_mult;                 /* notify_off_multiplier */
};

/* Address of BAR `bar` of bus 0 device `dev` (64-bit BARs included). */
u64 pci_bar_addr(u8 dev, int bar);

/* Enable memory decoding and bus mastering on `dev`, then walk its vendor capabilities and fill
 * `v` with the first of each configuration structure. */
void virtio_pci_find(u8 dev, struct virtio_pci *v);

u8 virtio_read8(const struct virtio_pci *v, u32 off);
u16 virtio_read16(const struct virtio_pci *v, u32 off);
u32 virtio_read32(const struct virtio_pci *v, u32 off);
void virtio_write8(const struct virtio_pci *v, u32 off, u8 val);
void virtio_write16(const struct virtio_pci *v, u32 off, u16 val);
void virtio_write32(const struct virtio_pci *v, u32 off, u32 val);
void virtio_write64(const struct virtio_pci *v, u32 off, u64 val);

static inline u8 virtio_status(const struct virtio_pci *v) { return virtio_read8(v, VIRTIO_STATUS); }
static inline void virtio_set_status(const struct virtio_pci *v, u8 st) { virtio_write8(v, VIRTIO_STATUS, st); }

/* Write 0 to the device status and wait (1 s at most) until it reads 0; returns that status. */
u8 virtio_reset(const struct virtio_pci *v);

/* The 64 feature bits the device offers. */
u64 virtio_device_features(const struct virtio_pci *v);

/* Write the driver's feature bits and set FEATURES_OK (after ACKNOWLEDGE | DRIVER); returns
 * nonzero when the device kept FEATURES_OK, i.e. accepted them. */
int virtio_set_features(const struct virtio_pci *v, u64 drv);

/* Select queue `index`; returns its maximum size (0: no such queue). */
u16 virtio_queue_select(const struct virtio_pci *v, u16 index);

/* Program the selected queue: `size` entries, MSI-X `vector` (0xffff: none), the descriptor
 * table, driver (avail) and device (used) areas; store its notify offset in `*notify_off` and
 * enable it. Returns nonzero when queue_enable reads back 1. */
int virtio_queue_setup(const struct virtio_pci *v, u16 size, u16 vector, const void *desc,
		       const void *avail, const void *used, u16 *notify_off);

/* Notify the device that queue `index` (notify offset `notify_off`) has new buffers. */
void virtio_notify(const struct virtio_pci *v, u16 notify_off, u16 index);
