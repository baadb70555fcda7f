/* COM1 8250/16550 output at 0x3f8 (polled, no interrupts). */
#include "rvmm.h"

#define COM1 0x3f8

void serial_init(void)
{
	outb(COM1 + 1, 0x00); /* IER: no interrupts */
	outb(COM1 + 3, 0x80); /* LCR: DLAB */
	outb(COM1 + 0, 0x01); /* DLL: 115200 baud */
	outb(COM1 + 1, 0x00); /* DLM */
	outb(COM1 + 3, 0x03); /* LCR: 8N1 */
	outb(COM1 + 2, 0xc7); /* FCR: enable and clear FIFOs */
	outb(COM1 + 4, 0x03); /* MCR: DTR, RTS */
}

void serial_putc(char c)
{
	/* Wait for THR empty, but never forever: a broken UART must not hang the guest. */
	for (int i = 0; i < 100000 && !(inb(COM1 + 5) & 0x20); i++)
		cpu_relax();
	outb(COM1, (u8)c);
}

void serial_write(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\n')
			serial_putc('\r');
		serial_putc(s[i]);
	}
}
