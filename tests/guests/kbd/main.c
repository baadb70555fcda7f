/* i8042 keyboard and mouse test guest: programs the controller (translation on, keyboard and aux
 * interrupts on), enables the keyboard and the PS/2 mouse's data reporting, then prints every
 * scancode byte IRQ 1 delivers and every 3-byte mouse packet IRQ 12 delivers (both through the
 * IOAPIC pins the MADT gives), until Enter is released (set-1 0x9c) or 30 s pass. */
#include "rvmm.h"

#define BUF 256
static volatile u8 buf[BUF];
static volatile u8 mbuf[BUF];
static volatile u32 head, irqs, mhead, mirqs;

static void drain(void)
{
	while (inb(0x64) & 1) {
		u8 st = inb(0x64);
		u8 b = inb(0x60);
		if (st & 0x20)
			mbuf[mhead++ % BUF] = b;
		else
			buf[head++ % BUF] = b;
	}
	lapic_eoi();
}

static void on_kbd(struct irq_frame *f)
{
	(void)f;
	irqs++;
	drain();
}

static void on_mouse(struct irq_frame *f)
{
	(void)f;
	mirqs++;
	drain();
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
	ctrl_cmd(0xa8); /* aux port on */
	ctrl_cmd(0x60);
	kbd_write(0x47); /* kbd and aux interrupts, system flag, translation */
	ctrl_cmd(0x20);
	int ccb = wait_byte();
	check(ccb == 0x47, "command byte reads %#x", ccb);
	ctrl_cmd(0xd4);
	kbd_write(0xf2); /* mouse: identify */
	int m1 = wait_byte(), m2 = wait_byte();
	ctrl_cmd(0xd4);
	kbd_write(0xf4); /* mouse: enable data reporting */
	int m3 = wait_byte();
	check(m1 == 0xfa && m2 == 0x00 && m3 == 0xfa, "mouse answers %#x %#x %#x", m1, m2, m3);
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
	u32 mgsi = m.isa_gsi[12];
	set_irq_handler(0x52, on_kbd);
	set_irq_handler(0x53, on_mouse);
	ioapic_route(m.ioapic_addr, gsi - m.ioapic_gsi_base, 0x52, lapic_id(), m.isa_flags[1]);
	ioapic_route(m.ioapic_addr, mgsi - m.ioapic_gsi_base, 0x53, lapic_id(), m.isa_flags[12]);
	irq_enable();
	printf("kbd: ready gsi=%u mouse_gsi=%u\n", gsi, mgsi);
	u32 tail = 0, mtail = 0;
	int done = 0;
	u64 end = tsc_deadline_ms(30000);
	while (!done && rdtsc() < end) {
		while (tail != head) {
			u8 b = buf[tail++ % BUF];
			printf("kbd: scancode=%#x\n", b);
			if (b == 0x9c)
				done = 1;
		}
		while (mhead - mtail >= 3) {
			u8 b0 = mbuf[mtail++ % BUF], b1 = mbuf[mtail++ % BUF], b2 = mbuf[mtail++ % BUF];
			int dx = (b0 & 0x10) ? (int)b1 - 256 : b1, dy = (b0 & 0x20) ? (int)b2 - 256 : b2;
			printf("kbd: mouse buttons=%u dx=%d dy=%d sync=%u\n", b0 & 7, dx, dy, (b0 >> 3) & 1);
		}
		cpu_relax();
	}
	irq_disable();
	printf("kbd: irqs=%u mouse_irqs=%u done=%d\n", irqs, mirqs, done);
	check(done, "no Enter release within 30 s");
	check(irqs > 0, "no keyboard interrupt");
	finish();
}
