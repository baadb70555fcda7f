/* The default demo guest: prints a banner with what it found, then powers off through ACPI. */
#include "rvmm.h"

int guest_main(void)
{
	u64 ram = 0;
	for (int i = 0; i < boot_info.nr_e820; i++)
		if (boot_info.e820[i].type == E820_RAM)
			ram += boot_info.e820[i].size;
	struct madt_info m;
	int cpus = madt_parse(&m) == 0 ? m.nr_cpus : 0;
	char vendor[13];
	struct cpuid_regs r = cpuid(0, 0);
	memcpy(vendor, &r.ebx, 4);
	memcpy(vendor + 4, &r.edx, 4);
	memcpy(vendor + 8, &r.ecx, 4);
	vendor[12] = 0;
	printf("\n");
	printf("  rvmm demo guest\n");
	printf("  ---------------\n");
	printf("  Booted via the %s entry, running in ring %d.\n", boot_kind_name(boot_info.kind), cpl());
	printf("  Memory: %lu MiB of RAM in %d e820 entries\n", ram >> 20, boot_info.nr_e820);
	printf("  CPUs:   %d in the ACPI MADT (%s)\n", cpus, vendor);
	printf("  Command line: %s\n", boot_info.cmdline);
	printf("demo: ok\n");
	printf("  Powering off.\n");
	acpi_poweroff();
	printf("FAIL: still running after the S5 request\n");
	return EXIT_FAIL;
}
