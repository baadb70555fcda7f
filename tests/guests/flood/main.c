/* Serial throughput and ordering: prints `flood_lines=N` (default 2000) numbered lines with a
 * running hash, so the test can tell a lost, duplicated or reordered byte. */
#include "rvmm.h"

int guest_main(void)
{
	char buf[24];
	u32 lines = 2000;
	if (cmdline_get(boot_info.cmdline, "flood_lines", buf, sizeof(buf)))
		lines = (u32)parse_u64(buf);
	u32 h = 0x811c9dc5;
	for (u32 i = 0; i < lines; i++) {
		char line[64];
		int n = snprintf(line, sizeof(line), "flood: %06u the quick brown fox %08x\n", i, h);
		serial_write(line, (size_t)n);
		h = fnv1a32(line, (size_t)n) ^ h;
	}
	printf("flood: done lines=%u hash=%#x\n", lines, h);
	finish();
}
