/* A small printf for guest reports, serialised across CPUs with a spinlock. */
#include "rvmm.h"

struct out {
	char *buf;
	size_t n, pos;
};

static void emit(struct out *o, char c)
{
	if (o->pos + 1 < o->n)
		o->buf[o->pos] = c;
	o->pos++;
}

static void emit_num(struct out *o, u64 v, int base, int upper, int neg, int width, int zero,
		     int left, const char *prefix)
{
	char tmp[24];
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
	int len = 0;
	do {
		tmp[len++] = digits[v % base];
		v /= base;
	} while (v);
	int plen = (neg ? 1 : 0) + (int)strlen(prefix);
	int pad = width > len + plen ? width - len - plen : 0;
	if (!left && !zero)
		while (pad-- > 0)
			emit(o, ' ');
	if (neg)
		emit(o, '-');
	for (const char *p = prefix; *p; p++)
		emit(o, *p);
	if (!left && zero)
		while (pad-- > 0)
			emit(o, '0');
	while (len)
		emit(o, tmp[--len]);
	if (left)
		while (pad-- > 0)
			emit(o, ' ');
}

int vsnprintf(char *buf, size_t n, const char *fmt, va_list ap)
{
	struct out o = { buf, n, 0 };
	for (const char *p = fmt; *p; p++) {
		if (*p != '%') {
			emit(&o, *p);
			continue;
		}
		p++;
		int zero = 0, left = 0, alt = 0, width = 0, lng = 0, prec = -1;
		for (;; p++) {
			if (*p == '0')
				zero = 1;
			else if (*p == '-')
				left = 1;
			else if (*p == '#')
				alt = 1;
			else
				break;
		}
		while (*p >= '0' && *p <= '9')
			width = width * 10 + (*p++ - '0');
		if (*p == '.') {
			prec = 0;
			for (p++; *p >= '0' && *p <= '9'; p++)
				prec = prec * 10 + (*p - '0');
		}
		while (*p == 'l' || *p == 'z') {
			lng = 1;
			p++;
		}
		switch (*p) {
		case 'd':
		case 'i': {
			i64 v = lng ? va_arg(ap, i64) : va_arg(ap, int);
			emit_num(&o, v < 0 ? -(u64)v : (u64)v, 10, 0, v < 0, width, zero, left, "");
			break;
		}
		case 'u':
			emit_num(&o, lng ? va_arg(ap, u64) : va_arg(ap, u32), 10, 0, 0, width, zero, left, "");
			break;
		case 'x':
		case 'X':
			emit_num(&o, lng ? va_arg(ap, u64) : va_arg(ap, u32), 16, *p == 'X', 0, width, zero,
				 left, alt ? "0x" : "");
			break;
		case 'p':
			emit_num(&o, (u64)va_arg(ap, void *), 16, 0, 0, width, zero, left, "0x");
			break;
		case 'c':
			emit(&o, (char)va_arg(ap, int));
			break;
		case 's': {
			const char *s = va_arg(ap, const char *);
			if (!s)
				s = "(null)";
			int len = 0;
			while (s[len] && (prec < 0 || len < prec))
				len++;
			if (!left)
				for (int i = len; i < width; i++)
					emit(&o, ' ');
			for (int i = 0; i < len; i++)
				emit(&o, s[i]);
			if (left)
				for (int i = len; i < width; i++)
					emit(&o, ' ');
			break;
		}
		case '%':
			emit(&o, '%');
			break;
		case 0:
			p--;
			break;
		default:
			emit(&o, '%');
			emit(&o, *p);
		}
	}
	if (n)
		buf[o.pos < n ? o.pos : n - 1] = 0;
	return (int)o.pos;
}

int snprintf(char *buf, size_t n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = vsnprintf(buf, n, fmt, ap);
	va_end(ap);
	return r;
}

static volatile int print_lock;

static void lock(void)
{
	while (__atomic_exchange_n(&print_lock, 1, __ATOMIC_ACQUIRE))
		cpu_relax();
}

static void unlock(void)
{
	__atomic_store_n(&print_lock, 0, __ATOMIC_RELEASE);
}

int printf(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	lock();
	serial_write(buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
	/* Truncated: keep the line structure the caller asked for. */
	size_t fl = strlen(fmt);
	if ((size_t)n >= sizeof(buf) && fl && fmt[fl - 1] == '\n')
		serial_write("\n", 1);
	unlock();
	return n;
}

void puts(const char *s)
{
	lock();
	serial_write(s, strlen(s));
	serial_write("\n", 1);
	unlock();
}

int check_failures;

int check(int ok, const char *fmt, ...)
{
	if (ok)
		return 1;
	char buf[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	printf("FAIL: %s\n", buf);
	check_failures++;
	return 0;
}

__attribute__((noreturn)) void finish(void)
{
	if (check_failures) {
		printf("RESULT: FAIL %d\n", check_failures);
		debug_exit(EXIT_FAIL);
	}
	printf("RESULT: PASS\n");
	debug_exit(EXIT_PASS);
}
