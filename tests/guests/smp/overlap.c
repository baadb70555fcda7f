/* Does a 4 KiB page collide with what the loader placed in low memory? */
#include "rvmm.h"

int overlaps_boot_structures(u64 page)
{
	u64 end = page + 4096;
	if (boot_info.ptr < end && boot_info.ptr + 4096 > page)
		return 1;
	if (boot_info.cmdline_addr < end && boot_info.cmdline_addr + strlen(boot_info.cmdline) + 1 > page)
		return 1;
	return 0;
}
