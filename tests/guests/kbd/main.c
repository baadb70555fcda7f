/* i8042 keyboard test guest: programs the controller (translation on, keyboard interrupt on),
 * enables the keyboard, then prints every scancode byte the keyboard interrupt (IRQ 1, through
 * the IOAPIC pin the MADT gives) delivers, until Enter is released (set-1 0x9c) or 30 s pass. */
#include "rvmm.h"

#define BUF 256
static volatile u8 buf[BUF];
static volatile u32 head, irqs;

static void on_kbd(struct irq_frame *f)
{
	(void)f;
	irqs++;
	while (inb(0x64) & 1) {
		u8 st = inb(0x64);
		u8 b = inb(0x60);
		if (!(st & 0x20))
			buf[head++ % BUF] = b;
	}
	lapic_eoi();
}

static int wait_byte(void)
{
	u64 end = tsc_deadline_ms(1000);
	while (rdtsc() < end)
		if (inb(0x64) & 1)
			return inb(0x60);
	return -1;
}

static void ctrl_cmd(u8 c)
{
	while (inb(0x64) & 2)
		cpu_relax();
	outb(0x64, c);
}

static void kbd_write(u8 v)
{
	while (inb(0x64) & 2)
		cpu_relax();
	outb(0x60, v);
}

int guest_main(void)
{
	while (inb(0x64) & 1) /* flush */
		inb(0x60);
	ctrl_cmd(0xaa);
	int st = wait_byte();
	check(st == 0x55, "controller self-test gave %#x", st);
	ctrl_cmd(0x60);
	kbd_write(0x65); /* kbd interrupt, system flag, aux disabled, translation */
	ctrl_cmd(0x20);
	int ccb = wait_byte();
	check(ccb == 0x65, "command byte reads %#x", ccb);
	kbd_write(0xed); /* LEDs: num lock */
	int a1 = wait_byte();
	kbd_write(0x02);
	int a2 = wait_byte();
	kbd_write(0xf4); /* enable scanning */
	int a3 = wait_byte();
	check(a1 == 0xfa && a2 == 0xfa && a3 == 0xfa, "keyboard ACKs %#x %#x %#x", a1, a2, a3);

	struct madt_info m;
	if (!check(madt_parse(&m) == 0, "no MADT"))
		finish();
	u32 gsi = m.isa_gsi[1];
	lapic_enable();
	set_irq_handler(0x52, on_kbd);
	ioapic_route(m.ioapic_addr, gsi - m.ioapic_gsi_base, 0x52, lapic_id(), m.isa_flags[1]);
	irq_enable();
	printf("kbd: ready gsi=%u\n", gsi);
	u32 tail = 0;
	int done = 0;
	u64 end = tsc_deadline_ms(30000);
	while (!done && rdtsc() < end) {
		while (tail != head) {
			u8 b = buf[tail++ % BUF];
			printf("kbd: scancode=%#x\n", b);
			if (b == 0x9c)
				done = 1;
		}
		cpu_relax();
	}
	irq_disable();
	printf("kbd: irqs=%u done=%d\n", irqs, done);
	check(done, "no Enter release within 30 s");
	check(irqs > 0, "no keyboard interrupt");
	finish();
}
