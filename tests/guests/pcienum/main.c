/* PCI enumeration of bus 0 through configuration mechanism #1 (0xcf8/0xcfc) and, when the MCFG
 * table gives one, through ECAM; both views must agree. Prints one line per function. */
#include "rvmm.h"

int guest_main(void)
{
	u64 ecam = pci_ecam_base();
	printf("pci: ecam=%#lx\n", ecam);
	int found = 0;
	for (u8 dev = 0; dev < 32; dev++) {
		for (u8 fn = 0; fn < 8; fn++) {
			u32 id = pci_cfg_read32(0, dev, fn, 0);
			if ((id & 0xffff) == 0xffff) {
				if (fn == 0)
					break;
				continue;
			}
			found++;
			u32 class = pci_cfg_read32(0, dev, fn, 8) >> 8;
			u8 hdr = pci_cfg_read8(0, dev, fn, 0x0e);
			check(pci_cfg_read16(0, dev, fn, 0) == (id & 0xffff), "16-bit vendor read differs at %02x.%x", dev, fn);
			printf("pci: dev=00:%02x.%x id=%04x:%04x class=%06x header=%#x\n", dev, fn, id & 0xffff,
			       id >> 16, class, hdr);
			if (ecam) {
				u32 eid = pci_ecam_read32(ecam, 0, dev, fn, 0);
				u32 eclass = pci_ecam_read32(ecam, 0, dev, fn, 8) >> 8;
				check(eid == id && eclass == class, "ECAM and 0xcf8 disagree at 00:%02x.%x (%#x/%#x vs %#x/%#x)",
				      dev, fn, eid, eclass, id, class);
			}
			if (fn == 0 && !(hdr & 0x80))
				break;
		}
	}
	if (ecam) /* an absent device reads as all ones through ECAM too */
		check(pci_ecam_read32(ecam, 0, 31, 7, 0) == 0xffffffff || pci_cfg_read32(0, 31, 7, 0) != 0xffffffff,
		      "ECAM read of an absent function is not all ones");
	printf("pci: functions=%d\n", found);
	finish();
}
