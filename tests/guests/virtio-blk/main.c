/* virtio-blk over the virtio-pci modern transport, driven from the virtio 1.2 specification
 * (§4.1 PCI transport, §2.7 split virtqueues, §5.2 block device) by polling in ring 3.
 *
 * Finds the first virtio block function on bus 0, negotiates features, sets up queue 0, then
 * writes a pattern at sectors spread across the disk, reads it back (direct and indirect
 * descriptors), flushes, write-zeroes and discards when offered, reads the serial with GET_ID
 * and checks that out-of-range requests fail. The host side checks the image afterwards, so
 * the pattern is a pure function of the sector number (see pattern_byte).
 *
 * Command line: blk_writes=N (pattern sites, default 16); blk_bench=N instead runs the benchmark
 * (N random 4 KiB writes and reads, 64 MiB of 1 MiB sequential writes and reads, queue depth 1,
 * polled from ring 3) and prints "blkbench: …" with TSC cycles per phase. */
#include "rvmm.h"
#include "virtio.h"

#define F_SIZE_MAX (1ul << 1)
#define F_SEG_MAX (1ul << 2)
#define F_BLK_SIZE (1ul << 6)
#define F_FLUSH (1ul << 9)
#define F_DISCARD (1ul << 13)
#define F_WRITE_ZEROES (1ul << 14)
#define F_INDIRECT (1ul << 28)
#define F_VERSION_1 (1ul << 32)

#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8
#define T_DISCARD 11
#define T_WRITE_ZEROES 13


#define QSIZE 16
#define IO_BYTES 4096

VIRTQ_AVAIL(avail, QSIZE);
VIRTQ_USED(used, QSIZE);
struct req_hdr { u32 type, reserved; u64 sector; } __attribute__((packed));
struct dz_seg { u64 sector; u32 num, flags; } __attribute__((packed));

static struct virtq_desc dtab[QSIZE] __attribute__((aligned(4096)));
static struct avail avail __attribute__((aligned(4096)));
static struct used used __attribute__((aligned(4096)));
static struct virtq_desc itab[4] __attribute__((aligned(16)));
static struct req_hdr hdr;
static struct dz_seg seg;
static u8 status;
static u8 buf[IO_BYTES] __attribute__((aligned(4096)));
static u8 idbuf[20];
#define BIG (1u << 20)
static u8 big[BIG] __attribute__((aligned(4096)));

static struct virtio_pci vp;
static u16 notify_off;
static u16 avail_idx, last_used;

/* The pattern the host recomputes: byte j of sector s. */
static u8 pattern_byte(u64 s, u32 j) { return (u8)(s * 131 + j * 7 + 0x5a + (j >> 9)); }

/* Post the chain starting at descriptor 0, kick, and poll the used ring (2 s timeout). */
static int submit(void)
{
	avail.ring[avail_idx % QSIZE] = 0;
	barrier();
	avail.idx = ++avail_idx;
	barrier();
	virtio_notify(&vp, notify_off, 0);
	u64 deadline = tsc_deadline_ms(2000);
	while (*(volatile u16 *)&used.idx == last_used) {
		if (rdtsc() > deadline) {
			printf("virtio-blk: request timed out\n");
			return -1;
		}
		cpu_relax();
	}
	barrier();
	struct virtq_used_elem e = used.ring[last_used % QSIZE];
	last_used++;
	check(e.id == 0, "used id %u, expected the chain head 0", e.id);
	return (int)e.len;
}

/* header → [data] → status, data device-writable when `in`. */
static int request(u32 type, u64 sector, void *data, u32 len, int in)
{
	hdr.type = type;
	hdr.reserved = 0;
	hdr.sector = sector;
	status = 0xff;
	int n = 0;
	dtab[n] = (struct virtq_desc){(u64)&hdr, sizeof(hdr), VIRTQ_DESC_F_NEXT, 1};
	n++;
	if (len) {
		dtab[n] = (struct virtq_desc){(u64)data, len,
					      (u16)(VIRTQ_DESC_F_NEXT | (in ? VIRTQ_DESC_F_WRITE : 0)),
					      (u16)(n + 1)};
		n++;
	}
	dtab[n] = (struct virtq_desc){(u64)&status, 1, VIRTQ_DESC_F_WRITE, 0};
	int used_len = submit();
	if (used_len < 0)
		return -1;
	return status;
}

static void fill(u64 sector)
{
	for (u32 j = 0; j < IO_BYTES; j++)
		buf[j] = pattern_byte(sector, j);
}

static int matches(u64 sector)
{
	for (u32 j = 0; j < IO_BYTES; j++)
		if (buf[j] != pattern_byte(sector, j))
			return 0;
	return 1;
}

static int setup(u8 dev)
{
	check(pci_cfg_read16(0, dev, 0, 6) & 0x10, "no capability list");
	virtio_pci_find(dev, &vp);
	printf("virtio-blk: common=%#lx notify=%#lx mult=%u isr=%#lx device=%#lx\n", vp.common,
	       vp.notify, vp.notify_mult, vp.isr, vp.device);
	if (!check(vp.common && vp.notify && vp.isr && vp.device, "missing virtio capability"))
		return -1;
	if (!check(vp.common < (1ul << 32) && vp.notify < (1ul << 32), "BARs above 4 GiB are not mapped"))
		return -1;

	check(virtio_reset(&vp) == 0, "device status not 0 after reset");
	virtio_set_status(&vp, VIRTIO_ST_ACK);
	virtio_set_status(&vp, VIRTIO_ST_ACK | VIRTIO_ST_DRIVER);
	u64 feat = virtio_device_features(&vp);
	printf("virtio-blk: device_features=%#lx\n", feat);
	if (!check((feat & F_VERSION_1) != 0, "device does not offer VERSION_1"))
		return -1;
	u64 want = F_VERSION_1 | F_FLUSH | F_BLK_SIZE | F_SEG_MAX | F_SIZE_MAX | F_DISCARD |
		   F_WRITE_ZEROES | F_INDIRECT;
	u64 drv = feat & want;
	if (!check(virtio_set_features(&vp, drv), "device refused our feature subset"))
		return -1;
	printf("virtio-blk: driver_features=%#lx num_queues=%u\n", drv,
	       virtio_read16(&vp, VIRTIO_NUM_QUEUES));

	u16 max = virtio_queue_select(&vp, 0);
	if (!check(max >= QSIZE, "queue 0 too small (%u)", max))
		return -1;
	/* No MSI-X vector: we poll. */
	check(virtio_queue_setup(&vp, QSIZE, 0xffff, dtab, &avail, &used, &notify_off),
	      "queue_enable did not stick");
	virtio_set_status(&vp, VIRTIO_ST_ACK | VIRTIO_ST_DRIVER | VIRTIO_ST_FEATURES_OK |
				       VIRTIO_ST_DRIVER_OK);
	check(!(virtio_status(&vp) & VIRTIO_ST_NEEDS_RESET), "device needs reset after DRIVER_OK");
	return (int)drv;
}

static u64 rng = 0x9e3779b97f4a7c15ul;
static u64 next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Cycles for `n` requests of `type`, `len` bytes each, at random 4 KiB-aligned sectors
 * (`random`) or consecutively from sector 0; 0 on a failed request. */
static u64 bench_phase(u32 type, u64 cap, u32 len, u64 n, int random)
{
	u64 sectors = len / 512, t0 = rdtsc();
	for (u64 i = 0; i < n; i++) {
		u64 s = random ? (next_rand() % (cap / 8 - 1)) * 8 : (i * sectors) % (cap - sectors);
		void *b = len <= IO_BYTES ? (void *)buf : (void *)big;
		if (request(type, s, b, len, type == T_IN) != 0) {
			printf("blkbench: request failed at sector %lu\n", s);
			return 0;
		}
	}
	return rdtsc() - t0;
}

static void bench(u64 cap, u64 n)
{
	u64 khz = tsc_khz();
	memset(big, 0xa5, BIG);
	memset(buf, 0x5a, IO_BYTES);
	u64 seq = 64;
	u64 rw = bench_phase(T_OUT, cap, IO_BYTES, n, 1);
	u64 rr = bench_phase(T_IN, cap, IO_BYTES, n, 1);
	u64 sw = bench_phase(T_OUT, cap, BIG, seq, 0);
	u64 sr = bench_phase(T_IN, cap, BIG, seq, 0);
	check(rw && rr && sw && sr, "a benchmark request failed");
	if (!(rw && rr && sw && sr))
		return;
	printf("blkbench: tsc_khz=%lu n=%lu seq_mib=%lu\n", khz, n, seq);
	printf("blkbench: rand4k_write_cycles=%lu rand4k_read_cycles=%lu seq1m_write_cycles=%lu seq1m_read_cycles=%lu\n",
	       rw, rr, sw, sr);
	printf("blkbench: rand4k_write_iops=%lu rand4k_read_iops=%lu seq1m_write_mbs=%lu seq1m_read_mbs=%lu\n",
	       n * khz * 1000 / rw, n * khz * 1000 / rr, seq * khz * 1000 / sw, seq * khz * 1000 / sr);
}

int guest_main(void)
{
	u8 dev = 0xff;
	for (u8 d = 0; d < 32; d++) {
		u32 id = pci_cfg_read32(0, d, 0, 0);
		u16 vendor = id & 0xffff, device = id >> 16;
		if (vendor == VIRTIO_VENDOR && (device == 0x1042 || (device == 0x1001 &&
		    pci_cfg_read16(0, d, 0, 0x2e) == 2))) {
			dev = d;
			printf("virtio-blk: found 00:%02x.0 id=%04x:%04x\n", d, vendor, device);
			break;
		}
	}
	if (!check(dev != 0xff, "no virtio block device on bus 0"))
		finish();
	u64 feat = 0;
	int r = setup(dev);
	if (r < 0)
		finish();
	/* Re-read what we negotiated, both halves. */
	virtio_write32(&vp, VIRTIO_DRV_FEATURE_SEL, 0);
	feat = virtio_read32(&vp, VIRTIO_DRV_FEATURE);
	virtio_write32(&vp, VIRTIO_DRV_FEATURE_SEL, 1);
	feat |= (u64)virtio_read32(&vp, VIRTIO_DRV_FEATURE) << 32;

	u64 cap = mmio_read32(vp.device) | (u64)mmio_read32(vp.device + 4) << 32;
	printf("virtio-blk: capacity=%lu\n", cap);
	if (feat & F_BLK_SIZE)
		printf("virtio-blk: blk_size=%u\n", mmio_read32(vp.device + 20));
	if (!check(cap >= 1024, "disk too small (%lu sectors)", cap))
		finish();

	char arg[32];
	if (cmdline_get(boot_info.cmdline, "blk_bench", arg, sizeof(arg))) {
		bench(cap, parse_u64(arg));
		virtio_set_status(&vp, 0);
		finish();
	}
	u64 sites = 16;
	if (cmdline_get(boot_info.cmdline, "blk_writes", arg, sizeof(arg)))
		sites = parse_u64(arg);
	u64 stride = (cap - 8) / sites;
	stride &= ~7ul;
	int ok_w = 0, ok_r = 0;
	for (u64 i = 0; i < sites; i++) {
		u64 s = i * stride;
		fill(s);
		if (check(request(T_OUT, s, buf, IO_BYTES, 0) == 0, "write at sector %lu failed", s))
			ok_w++;
	}
	/* The last 8 sectors too (the end of the disk is the edge case). */
	fill(cap - 8);
	check(request(T_OUT, cap - 8, buf, IO_BYTES, 0) == 0, "write of the last sectors failed");
	for (u64 i = 0; i < sites; i++) {
		u64 s = i * stride;
		memset(buf, 0, IO_BYTES);
		if (check(request(T_IN, s, buf, IO_BYTES, 1) == 0 && matches(s), "read back at sector %lu wrong", s))
			ok_r++;
	}
	memset(buf, 0, IO_BYTES);
	check(request(T_IN, cap - 8, buf, IO_BYTES, 1) == 0 && matches(cap - 8), "last sectors read back wrong");
	printf("virtio-blk: writes=%d reads=%d stride=%lu\n", ok_w, ok_r, stride);

	if (feat & F_FLUSH)
		check(request(T_FLUSH, 0, NULL, 0, 0) == 0, "flush failed");

	memset(idbuf, 0, sizeof(idbuf));
	if (check(request(T_GET_ID, 0, idbuf, sizeof(idbuf), 1) == 0, "GET_ID failed")) {
		char s[21];
		memcpy(s, idbuf, 20);
		s[20] = 0;
		printf("virtio-blk: serial=%s\n", s);
	}

	/* Beyond the end: the device must refuse, not wrap. */
	check(request(T_IN, cap, buf, 512, 1) == 1, "read past the end did not fail with IOERR");
	check(request(T_IN, cap - 1, buf, 1024, 1) == 1, "read straddling the end did not fail");

	if (feat & F_INDIRECT) {
		/* The same read of site 1 through an indirect table. */
		u64 s = stride;
		hdr = (struct req_hdr){T_IN, 0, s};
		status = 0xff;
		memset(buf, 0, IO_BYTES);
		itab[0] = (struct virtq_desc){(u64)&hdr, sizeof(hdr), VIRTQ_DESC_F_NEXT, 1};
		itab[1] = (struct virtq_desc){(u64)buf, IO_BYTES,
					      VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2};
		itab[2] = (struct virtq_desc){(u64)&status, 1, VIRTQ_DESC_F_WRITE, 0};
		dtab[0] = (struct virtq_desc){(u64)itab, 3 * sizeof(struct virtq_desc),
					      VIRTQ_DESC_F_INDIRECT, 0};
		int n = submit();
		check(n == IO_BYTES + 1, "indirect read used length %d", n);
		check(status == 0 && matches(s), "indirect read wrong (status %u)", status);
		printf("virtio-blk: indirect=ok\n");
	}

	if (feat & F_WRITE_ZEROES) {
		/* Zero site 2: the host expects zeroes there. */
		seg = (struct dz_seg){2 * stride, 8, 0};
		check(request(T_WRITE_ZEROES, 0, &seg, sizeof(seg), 0) == 0, "write-zeroes failed");
		memset(buf, 0xee, IO_BYTES);
		check(request(T_IN, 2 * stride, buf, IO_BYTES, 1) == 0, "read after write-zeroes failed");
		int z = 1;
		for (u32 j = 0; j < IO_BYTES; j++)
			z &= buf[j] == 0;
		check(z, "write-zeroes range does not read as zeroes");
		printf("virtio-blk: write_zeroes=ok\n");
	}
	if (feat & F_DISCARD) {
		/* Discard 8 sectors just after site 3, never written, so the host sees zeroes. */
		seg = (struct dz_seg){3 * stride + 64, 8, 0};
		check(request(T_DISCARD, 0, &seg, sizeof(seg), 0) == 0, "discard failed");
		printf("virtio-blk: discard=ok\n");
	}
	if (feat & F_FLUSH)
		check(request(T_FLUSH, 0, NULL, 0, 0) == 0, "final flush failed");
	virtio_set_status(&vp, 0); /* reset: the device stops using our rings */
	finish();
}
