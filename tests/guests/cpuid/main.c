/* CPUID as the guest sees it: vendor, feature bits the --cpu-model choices are about, the
 * hypervisor leaves, and the leaf 0xB topology levels. Universal rules are checked; the rest is
 * printed for the test. */
#include "rvmm.h"

static void sig(char *out, u32 a, u32 b, u32 c)
{
	memcpy(out, &a, 4);
	memcpy(out + 4, &b, 4);
	memcpy(out + 8, &c, 4);
	for (int i = 0; i < 12; i++)
		if (out[i] < 0x20 || out[i] > 0x7e)
			out[i] = '.';
	out[12] = 0;
}

static u64 msr(u64 index)
{
	return rdmsr((u32)index);
}

int guest_main(void)
{
	char s[13];
	struct cpuid_regs r = cpuid(0, 0);
	u32 max = r.eax;
	sig(s, r.ebx, r.edx, r.ecx);
	printf("cpuid: max_leaf=%#x vendor=%s\n", max, s);
	struct cpuid_regs l1 = cpuid(1, 0);
	printf("cpuid: leaf1 eax=%#x ebx=%#x ecx=%#x edx=%#x\n", l1.eax, l1.ebx, l1.ecx, l1.edx);
	u32 l7b = 0;
	if (max >= 7) {
		struct cpuid_regs l7 = cpuid(7, 0);
		l7b = l7.ebx;
		printf("cpuid: leaf7 ebx=%#x ecx=%#x edx=%#x\n", l7.ebx, l7.ecx, l7.edx);
	}
	printf("cpuid: features xsave=%u osxsave=%u avx=%u cmpxchg16b=%u hle=%u rtm=%u avx2=%u hypervisor=%u x2apic=%u apic=%u tsc=%u\n",
	       (l1.ecx >> 26) & 1, (l1.ecx >> 27) & 1, (l1.ecx >> 28) & 1, (l1.ecx >> 13) & 1, (l7b >> 4) & 1,
	       (l7b >> 11) & 1, (l7b >> 5) & 1, (l1.ecx >> 31) & 1, (l1.ecx >> 21) & 1, (l1.edx >> 9) & 1,
	       (l1.edx >> 4) & 1);
	check((l1.edx >> 9) & 1, "CPUID says there is no local APIC");
	check((l1.ebx >> 24) == lapic_id(), "CPUID initial APIC id %u differs from the LAPIC id %u", l1.ebx >> 24,
	      lapic_id());
	if ((l1.ecx >> 31) & 1) {
		struct cpuid_regs h = cpuid(0x40000000, 0);
		sig(s, h.ebx, h.ecx, h.edx);
		printf("cpuid: hypervisor max_leaf=%#x signature=%s\n", h.eax, s);
	}
	if (max >= 0xb) {
		for (u32 sub = 0; sub < 8; sub++) {
			struct cpuid_regs t = cpuid(0xb, sub);
			u32 type = (t.ecx >> 8) & 0xff;
			if (!type)
				break;
			printf("cpuid: topology level=%u type=%u shift=%u logical=%u x2apic_id=%u\n", sub, type,
			       t.eax & 0x1f, t.ebx & 0xffff, t.edx);
			check(t.edx == lapic_id(), "leaf 0xB x2APIC id %u differs from the LAPIC id %u", t.edx, lapic_id());
		}
	}
	printf("cpuid: leaf1 logical_per_pkg=%u htt=%u\n", (l1.ebx >> 16) & 0xff, (l1.edx >> 28) & 1);
	if (max >= 4) {
		for (u32 sub = 0; sub < 8; sub++) {
			struct cpuid_regs c = cpuid(4, sub);
			if (!(c.eax & 0x1f))
				break;
			printf("cpuid: cache index=%u type=%u level=%u sharing=%u cores_per_pkg=%u\n", sub, c.eax & 0x1f,
			       (c.eax >> 5) & 7, ((c.eax >> 14) & 0xfff) + 1, (c.eax >> 26) + 1);
		}
	}
	/* Power-on values the SDM gives; a VMM that forgets to set them leaves zeros. */
	u64 pat = ring0_call(msr, 0x277);
	printf("msr: pat=%#lx mtrr_def_type=%#lx\n", pat, ring0_call(msr, 0x2ff));
	check(pat == 0x0007040600070406UL, "IA32_PAT is %#lx, not the power-on default", pat);
	r = cpuid(0x80000000, 0);
	if (r.eax >= 0x80000004) {
		char brand[49];
		for (u32 i = 0; i < 3; i++) {
			struct cpuid_regs b = cpuid(0x80000002 + i, 0);
			memcpy(brand + 16 * i, &b, 16);
		}
		brand[48] = 0;
		printf("cpuid: brand=%s\n", brand);
	}
	finish();
}
