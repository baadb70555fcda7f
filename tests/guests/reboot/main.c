/* Reset through the i8042 (0xFE to port 0x64). Each boot prints a line; the test counts them
 * (restart) or expects the monitor to exit (--no-reboot). */
#include "rvmm.h"

int guest_main(void)
{
	printf("reboot: boot\n");
	/* Wait for the controller's input buffer to drain, as a driver would (bounded). */
	for (int i = 0; i < 100000 && (inb(0x64) & 2); i++)
		cpu_relax();
	printf("reboot: requesting reset\n");
	outb(0x64, 0xfe);
	delay_us(1000000);
	printf("FAIL: still running after the reset request\n");
	return EXIT_FAIL;
}
