/* CMOS real-time clock: waits for the update cycle to finish, reads the date and time (BCD or
 * binary, 12 or 24 hour per status register B) and prints them for the test to compare with the
 * host's UTC clock. */
#include "rvmm.h"

static u8 cmos(u8 reg)
{
	outb(0x70, reg);
	return inb(0x71);
}

static u32 bcd(u8 v, int is_bcd)
{
	return is_bcd ? (u32)(v >> 4) * 10 + (v & 15) : v;
}

int guest_main(void)
{
	u8 b = cmos(0x0b);
	int is_bcd = !(b & 4), h24 = (b & 2) != 0;
	u8 sec, min, hour, day, mon, year, century;
	/* Read twice until equal, each time after the update-in-progress flag clears. */
	for (int tries = 0;; tries++) {
		u64 end = tsc_deadline_ms(100);
		while ((cmos(0x0a) & 0x80) && rdtsc() < end)
			cpu_relax();
		sec = cmos(0x00), min = cmos(0x02), hour = cmos(0x04);
		day = cmos(0x07), mon = cmos(0x08), year = cmos(0x09), century = cmos(0x32);
		if ((cmos(0x00) == sec && cmos(0x02) == min) || tries > 10)
			break;
	}
	int pm = !h24 && (hour & 0x80);
	u32 h = bcd(hour & 0x7f, is_bcd);
	if (!h24)
		h = (h % 12) + (pm ? 12 : 0);
	u32 c = bcd(century, is_bcd);
	u32 y = (c >= 19 && c <= 21 ? c : 20) * 100 + bcd(year, is_bcd);
	u32 s = bcd(sec, is_bcd), mi = bcd(min, is_bcd), d = bcd(day, is_bcd), mo = bcd(mon, is_bcd);
	printf("rtc: time=%04u-%02u-%02uT%02u:%02u:%02u bcd=%d h24=%d century=%#x status_b=%#x\n", y, mo, d, h, mi, s,
	       is_bcd, h24, century, b);
	check(s < 60 && mi < 60 && h < 24, "time out of range: %u:%u:%u", h, mi, s);
	check(d >= 1 && d <= 31 && mo >= 1 && mo <= 12, "date out of range: %u-%u", mo, d);
	finish();
}
