/* Prints a line and then waits forever with interrupts on, for tests that stop the monitor from
 * outside (signals, the serial escape). Also echoes serial input, polled. */
#include "rvmm.h"

int guest_main(void)
{
	printf("idle: ready\n");
	for (;;) {
		if (inb(0x3fd) & 1)
			printf("idle: got %#x\n", inb(0x3f8));
		delay_us(1000);
	}
}
