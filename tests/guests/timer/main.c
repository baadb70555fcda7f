/* Timer interrupts: the LAPIC timer (periodic), then the PIT (channel 0) through the IOAPIC pin
 * the MADT's ISA overrides give for IRQ 0. Waits in ring 3 with interrupts on. */
#include "rvmm.h"

#define LAPIC_VECTOR 0x40
#define PIT_VECTOR 0x41
#define WANT_TICKS 5

static volatile u32 lapic_ticks, pit_ticks;

static void on_lapic_timer(struct irq_frame *f)
{
	(void)f;
	lapic_ticks++;
	lapic_eoi();
}

static void on_pit(struct irq_frame *f)
{
	(void)f;
	pit_ticks++;
	lapic_eoi();
}

static u64 write_tsc_deadline(u64 deadline)
{
	wrmsr(0x6e0, deadline); /* IA32_TSC_DEADLINE */
	return 0;
}

static u32 wait_ticks(volatile u32 *ticks, u64 ms)
{
	u64 end = tsc_deadline_ms(ms);
	irq_enable();
	while (*ticks < WANT_TICKS && rdtsc() < end)
		cpu_relax();
	irq_disable();
	return *ticks;
}

int guest_main(void)
{
	lapic_enable();
	set_irq_handler(LAPIC_VECTOR, on_lapic_timer);
	set_irq_handler(PIT_VECTOR, on_pit);

	lapic_write(LAPIC_TIMER_DIV, 0x3);                  /* divide by 16 */
	lapic_write(LAPIC_LVT_TIMER, LAPIC_VECTOR | (1 << 17)); /* periodic */
	lapic_write(LAPIC_TIMER_INIT, 200000);
	u64 t0 = rdtsc();
	u32 n = wait_ticks(&lapic_ticks, 5000);
	u64 us = (rdtsc() - t0) * 1000 / tsc_khz();
	lapic_write(LAPIC_LVT_TIMER, 1 << 16); /* masked */
	lapic_write(LAPIC_TIMER_INIT, 0);
	printf("timer: lapic ticks=%u us=%lu\n", n, us);
	check(n >= WANT_TICKS, "only %u LAPIC timer interrupts in 5 s", n);

	/* One-shot mode: exactly one interrupt. First let a tick still pending from the periodic
	 * phase (raised before the mask) be delivered, so it is not counted. */
	irq_enable();
	delay_us(2000);
	irq_disable();
	lapic_ticks = 0;
	lapic_write(LAPIC_LVT_TIMER, LAPIC_VECTOR); /* one-shot */
	lapic_write(LAPIC_TIMER_INIT, 100000);
	u64 end = tsc_deadline_ms(500);
	irq_enable();
	while (rdtsc() < end)
		cpu_relax();
	irq_disable();
	printf("timer: oneshot ticks=%u\n", lapic_ticks);
	check(lapic_ticks == 1, "one-shot LAPIC timer fired %u times", lapic_ticks);

	/* TSC-deadline mode, when CPUID offers it (Linux prefers it). */
	if ((cpuid(1, 0).ecx >> 24) & 1) {
		lapic_ticks = 0;
		lapic_write(LAPIC_LVT_TIMER, LAPIC_VECTOR | (2 << 17));
		ring0_call(write_tsc_deadline, rdtsc() + tsc_khz()); /* ~1 ms */
		end = tsc_deadline_ms(2000);
		irq_enable();
		while (!lapic_ticks && rdtsc() < end)
			cpu_relax();
		irq_disable();
		lapic_write(LAPIC_LVT_TIMER, 1 << 16);
		printf("timer: tsc_deadline ticks=%u\n", lapic_ticks);
		check(lapic_ticks == 1, "TSC-deadline timer fired %u times (CPUID advertises it)", lapic_ticks);
	} else {
		printf("timer: tsc_deadline unsupported\n");
	}

	struct madt_info m;
	if (check(madt_parse(&m) == 0 && m.nr_ioapics > 0, "no IOAPIC in the MADT")) {
		u32 gsi = m.isa_gsi[0];
		outb(0x21, 0xff); /* mask the 8259s: the PIT must come through the IOAPIC */
		outb(0xa1, 0xff);
		ioapic_route(m.ioapic_addr, gsi - m.ioapic_gsi_base, PIT_VECTOR, lapic_id(), m.isa_flags[0]);
		outb(0x43, 0x34); /* channel 0, lo/hi, mode 2 (rate generator) */
		outb(0x40, 11932 & 0xff); /* ~100 Hz */
		outb(0x40, 11932 >> 8);
		t0 = rdtsc();
		n = wait_ticks(&pit_ticks, 5000);
		us = (rdtsc() - t0) * 1000 / tsc_khz();
		ioapic_write(m.ioapic_addr, 0x10 + 2 * (gsi - m.ioapic_gsi_base), 1 << 16); /* mask */
		printf("timer: pit ticks=%u us=%lu gsi=%u\n", n, us, gsi);
		check(n >= WANT_TICKS, "only %u PIT interrupts in 5 s", n);
	}
	finish();
}
