/* Jumps (in ring 0) to an address in the PCI hole where nothing is mapped: the instruction fetch
 * cannot be served from RAM, so the monitor sees an emulation failure / internal error and must
 * report the vCPU state and exit non-zero instead of hanging. */
#include "rvmm.h"

static u64 jump(u64 target)
{
	((void (*)(void))target)();
	return 0;
}

int guest_main(void)
{
	printf("badexec: jumping to 0xd0000000\n");
	ring0_call(jump, 0xd0000000UL);
	printf("FAIL: came back from unmapped code\n");
	return EXIT_FAIL;
}
