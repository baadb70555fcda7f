/* Triple fault: load an empty IDT and take an exception. A PC resets on the resulting shutdown;
 * the monitor must restart the VM (or exit with --no-reboot), never hang or crash. */
#include "rvmm.h"

static u64 fault(u64 unused)
{
	(void)unused;
	static const struct {
		u16 limit;
		u64 base;
	} __attribute__((packed)) empty = { 0, 0 };
	__asm__ volatile("lidt %0; ud2" ::"m"(empty));
	return 0;
}

int guest_main(void)
{
	printf("triplefault: boot\n");
	ring0_call(fault, 0);
	printf("FAIL: still running after the triple fault\n");
	return EXIT_FAIL;
}
