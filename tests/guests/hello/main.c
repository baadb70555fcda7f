#include "rvmm.h"
int guest_main(void)
{
	printf("hello from %s cpl=%d cmdline=%s\n", boot_kind_name(boot_info.kind), cpl(), boot_info.cmdline);
	finish();
}
