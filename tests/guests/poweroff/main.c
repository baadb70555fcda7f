/* ACPI S5 power-off: PM1a control from the FADT, SLP_TYP from the DSDT's \_S5. A monitor that
 * implements it ends the run (rvmm: exit status 0); otherwise the guest reports failure. */
#include "rvmm.h"

int guest_main(void)
{
	printf("poweroff: start\n");
	acpi_poweroff();
	printf("FAIL: still running after the S5 request\n");
	return EXIT_FAIL;
}
