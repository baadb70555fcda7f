/* Serial input with interrupts: COM1's receive interrupt (IER bit 0, MCR OUT2) routed through the
 * IOAPIC pin the MADT gives for ISA IRQ 4. Reads one line and echoes it back. */
#include "rvmm.h"

#define COM1 0x3f8
#define RX_VECTOR 0x44

static volatile u32 rx_irqs, len, done;
static char line[64];

static void on_rx(struct irq_frame *f)
{
	(void)f;
	rx_irqs++;
	(void)inb(COM1 + 2); /* IIR: acknowledge */
	while (inb(COM1 + 5) & 1) {
		char c = (char)inb(COM1);
		if (c == '\n' || c == '\r')
			done = 1;
		else if (!done && len + 1 < sizeof(line))
			line[len++] = c;
	}
	lapic_eoi();
}

int guest_main(void)
{
	struct madt_info m;
	if (!check(madt_parse(&m) == 0 && m.nr_ioapics > 0, "no IOAPIC in the MADT"))
		finish();
	u32 gsi = m.isa_gsi[4];
	lapic_enable();
	set_irq_handler(RX_VECTOR, on_rx);
	ioapic_route(m.ioapic_addr, gsi - m.ioapic_gsi_base, RX_VECTOR, lapic_id(), m.isa_flags[4]);
	while (inb(COM1 + 5) & 1) /* drop anything received before we were ready */
		(void)inb(COM1);
	outb(COM1 + 4, 0x0b); /* DTR, RTS, OUT2 (the PC's IRQ enable) */
	outb(COM1 + 1, 0x01); /* IER: received data available */
	printf("echo: ready gsi=%u\n", gsi);
	u64 end = tsc_deadline_ms(10000);
	irq_enable();
	while (!done && rdtsc() < end)
		cpu_relax();
	irq_disable();
	outb(COM1 + 1, 0x00);
	line[len] = 0;
	printf("echo: line=%s irqs=%u\n", line, rx_irqs);
	check(done, "no complete line received in 10 s");
	check(rx_irqs > 0, "no receive interrupt");
	finish();
}
