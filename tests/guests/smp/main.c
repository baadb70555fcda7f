/* SMP bring-up: find the CPUs in the MADT, start every AP with INIT-SIPI-SIPI through the LAPIC,
 * and have each AP report its LAPIC ID and CPUID-reported APIC ID. */
#include "rvmm.h"

#define TRAMPOLINE_PAGE 0x8000
int overlaps_boot_structures(u64 page);

static struct madt_info madt;
static volatile u32 ap_lapic_id[64], ap_cpuid_id[64], ap_x2apic_id[64], ap_done;
static volatile u64 ap_apic_base[64];

#define MSR_APIC_BASE 0x1b
#define APIC_BASE_BSP (1UL << 8)
#define APIC_BASE_ENABLE (1UL << 11)

static u64 read_apic_base(u64 unused)
{
	(void)unused;
	return rdmsr(MSR_APIC_BASE);
}

/* x2APIC id from CPUID leaf 0xB (EDX), or the leaf-1 id when the leaf is absent. */
static u32 cpuid_x2apic_id(void)
{
	if (cpuid(0, 0).eax >= 0xb && ((cpuid(0xb, 0).ecx >> 8) & 0xff))
		return cpuid(0xb, 0).edx;
	return cpuid(1, 0).ebx >> 24;
}

void ap_main(u32 index)
{
	u32 id = lapic_id();
	u32 cpuid_id = cpuid(1, 0).ebx >> 24;
	u32 x2id = cpuid_x2apic_id();
	if (index < 64) {
		ap_apic_base[index] = rdmsr(MSR_APIC_BASE); /* APs run in ring 0 */
		ap_lapic_id[index] = id;
		ap_cpuid_id[index] = cpuid_id;
		ap_x2apic_id[index] = x2id;
	}
	printf("ap: index=%u apic_id=%u cpuid_apic_id=%u cpl=%d\n", index, id, cpuid_id, cpl());
	__atomic_fetch_add(&ap_done, 1, __ATOMIC_SEQ_CST);
}

int guest_main(void)
{
	if (!check(madt_parse(&madt) == 0, "no MADT"))
		finish();
	u32 bsp = lapic_id();
	printf("smp: madt_cpus=%d bsp_apic_id=%u bsp_cpuid_apic_id=%u\n", madt.nr_cpus, bsp, cpuid(1, 0).ebx >> 24);
	int bsp_listed = 0;
	for (int i = 0; i < madt.nr_cpus; i++) {
		printf("smp: madt_apic_id=%u\n", madt.apic_ids[i]);
		bsp_listed |= madt.apic_ids[i] == bsp;
		for (int j = 0; j < i; j++)
			check(madt.apic_ids[i] != madt.apic_ids[j], "APIC id %u listed twice", madt.apic_ids[i]);
	}
	check(bsp_listed, "BSP APIC id %u is not in the MADT", bsp);
	u64 base = ring0_call(read_apic_base, 0);
	printf("smp: bsp_apic_base=%#lx\n", base);
	check((base & APIC_BASE_BSP) && (base & APIC_BASE_ENABLE) && (base & ~0xfffUL) == LAPIC_BASE,
	      "BSP IA32_APIC_BASE is %#lx (want 0xfee00000 | BSP | enable)", base);
	check(!overlaps_boot_structures(TRAMPOLINE_PAGE), "trampoline page overlaps boot data");
	lapic_enable();
	u8 vector = ap_trampoline_install(TRAMPOLINE_PAGE);
	u32 started = 0;
	for (int i = 0; i < madt.nr_cpus && started < 63; i++) {
		u32 id = madt.apic_ids[i];
		if (id == bsp)
			continue;
		u32 want = ap_arrived + 1;
		lapic_start_ap(id, vector);
		u64 end = tsc_deadline_ms(3000);
		while (ap_arrived < want && rdtsc() < end)
			cpu_relax();
		if (!check(ap_arrived >= want, "AP with APIC id %u did not start", id))
			continue;
		started++;
		/* APs arrive in start order, so index `want` is the AP just started. */
		end = tsc_deadline_ms(3000);
		while (ap_done < started && rdtsc() < end)
			cpu_relax();
		check(ap_lapic_id[want] == id, "AP started as APIC id %u reports LAPIC id %u", id, ap_lapic_id[want]);
		check(ap_cpuid_id[want] == id, "AP with APIC id %u has CPUID APIC id %u", id, ap_cpuid_id[want]);
		check(ap_x2apic_id[want] == id, "AP with APIC id %u has CPUID leaf 0xB id %u", id, ap_x2apic_id[want]);
		check(!(ap_apic_base[want] & APIC_BASE_BSP) && (ap_apic_base[want] & APIC_BASE_ENABLE),
		      "AP %u IA32_APIC_BASE is %#lx (want enabled, BSP flag clear)", id, ap_apic_base[want]);
	}
	printf("smp: cpus_online=%u\n", started + 1);
	/* smp.reset on the command line: reset the machine after a clean bring-up, so a test can
	 * check that the APs are back in wait-for-SIPI on the next boot. */
	if (strstr(boot_info.cmdline, "smp.reset") && !check_failures) {
		printf("smp: resetting\n");
		outb(0x64, 0xfe);
		delay_us(1000000);
		check(0, "still running after the reset request");
	}
	finish();
}
