/* Freestanding string helpers, command-line parsing and FNV-1a. */
#include "rvmm.h"

void *memset(void *d, int c, size_t n)
{
	u8 *p = d;
	while (n--)
		*p++ = (u8)c;
	return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
	u8 *a = d;
	const u8 *b = s;
	while (n--)
		*a++ = *b++;
	return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const u8 *x = a, *y = b;
	for (size_t i = 0; i < n; i++)
		if (x[i] != y[i])
			return x[i] - y[i];
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

int strcmp(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return (u8)*a - (u8)*b;
}

int strncmp(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (a[i] != b[i] || !a[i])
			return (u8)a[i] - (u8)b[i];
	}
	return 0;
}

const char *strstr(const char *h, const char *n)
{
	size_t ln = strlen(n);
	for (; *h; h++)
		if (!strncmp(h, n, ln))
			return h;
	return ln ? NULL : h;
}

int cmdline_get(const char *cmdline, const char *key, char *buf, size_t n)
{
	size_t kl = strlen(key);
	const char *p = cmdline;
	while (p && *p) {
		while (*p == ' ')
			p++;
		if (!strncmp(p, key, kl) && p[kl] == '=') {
			p += kl + 1;
			size_t i = 0;
			while (p[i] && p[i] != ' ' && i + 1 < n) {
				buf[i] = p[i];
				i++;
			}
			if (n)
				buf[i] = 0;
			return 1;
		}
		while (*p && *p != ' ')
			p++;
	}
	return 0;
}

u64 parse_u64(const char *s)
{
	u64 v = 0;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		for (s += 2;; s++) {
			int d;
			if (*s >= '0' && *s <= '9')
				d = *s - '0';
			else if (*s >= 'a' && *s <= 'f')
				d = *s - 'a' + 10;
			else if (*s >= 'A' && *s <= 'F')
				d = *s - 'A' + 10;
			else
				break;
			v = v * 16 + d;
		}
	} else {
		for (; *s >= '0' && *s <= '9'; s++)
			v = v * 10 + (*s - '0');
	}
	switch (*s) {
	case 'K': case 'k': v <<= 10; break;
	case 'M': case 'm': v <<= 20; break;
	case 'G': case 'g': v <<= 30; break;
	}
	return v;
}

u32 fnv1a32(const void *p, size_t n)
{
	const u8 *b = p;
	u32 h = 0x811c9dc5;
	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x01000193;
	}
	return h;
}
