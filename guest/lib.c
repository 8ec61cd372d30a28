/* lib.c — guest runtime: mem/str helpers, UART printf-lite, exit, cmdline, RAM map, size parsing. */
#include <stdarg.h>

#include "guest.h"

/* ---- memory and strings (also what gcc may call implicitly) --------------------------------- */
void *memcpy(void *dst, const void *src, size_t n)
{
	void *d = dst;

	__asm__ volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");
	return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
	uint8_t *d = dst;
	const uint8_t *s = src;

	if (d <= s || d >= s + n)
		return memcpy(dst, src, n);
	while (n--)
		d[n] = s[n];
	return dst;
}

void *memset(void *dst, int c, size_t n)
{
	void *d = dst;

	__asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
	return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const uint8_t *x = a, *y = b;

	for (; n; n--, x++, y++)
		if (*x != *y)
			return *x < *y ? -1 : 1;
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
	return (uint8_t)*a - (uint8_t)*b;
}

/* ---- UART ------------------------------------------------------------------------------------ */
void putc(char c)
{
	/* Each port access is a VM exit (~40 µs under PVM): no LSR polling (the VMM's UART is always
	 * ready and QEMU's consumes THR synchronously) and no CR before LF, so logs are plain lines. */
	outb((uint8_t)c, GUEST_UART);
}

void puts(const char *s)
{
	while (*s)
		putc(*s++);
}

static void put_num(uint64_t v, unsigned base, bool neg, int width, char pad)
{
	char buf[24];
	int n = 0;

	do {
		unsigned d = (unsigned)(v % base);
		buf[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
		v /= base;
	} while (v);
	if (neg)
		buf[n++] = '-';
	for (; width > n; width--)
		putc(pad);
	while (n)
		putc(buf[--n]);
}

void printf(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	for (; *fmt; fmt++) {
		const char *start = fmt;
		int lng = 0, width = 0;
		char pad = ' ';

		if (*fmt != '%') {
			putc(*fmt);
			continue;
		}
		fmt++;
		if (*fmt == '0') {
			pad = '0';
			fmt++;
		}
		while (*fmt >= '0' && *fmt <= '9' && width < 64)
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l' || *fmt == 'z') {
			lng = 1;
			fmt++;
		}
		switch (*fmt) {
		case 'd':
		case 'i': {
			int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
			uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;
			put_num(u, 10, v < 0, width, pad);
			break;
		}
		case 'u':
			put_num(lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 10, false, width, pad);
			break;
		case 'x':
			put_num(lng ? va_arg(ap, uint64_t) : va_arg(ap, unsigned), 16, false, width, pad);
			break;
		case 'p':
			puts("0x");
			put_num((uint64_t)(uintptr_t)va_arg(ap, void *), 16, false, width, pad);
			break;
		case 's': {
			const char *s = va_arg(ap, const char *);
			puts(s ? s : "(null)");
			break;
		}
		case 'c':
			putc((char)va_arg(ap, int));
			break;
		case '%':
			putc('%');
			break;
		default: /* unknown: print verbatim */
			while (start <= fmt && *start)
				putc(*start++);
			if (!*fmt)
				fmt--;
			break;
		}
	}
	va_end(ap);
}

__attribute__((noreturn)) void guest_exit(uint8_t status)
{
	outb(status, GUEST_EXITPORT);
	for (;;)
		cpu_relax();
}

/* ---- cmdline -------------------------------------------------------------------------------- */
#define CMDLINE_MAX 1024

static char cmdline_buf[CMDLINE_MAX]; /* as passed */
static char cmdline_tok[CMDLINE_MAX]; /* same, with NULs after each key and value */

void cmdline_init(const struct hvm_start_info *si)
{
	const char *src = NULL;
	size_t n = 0;

	if (si->magic == HVM_START_MAGIC && si->cmdline_paddr && si->cmdline_paddr < (1ull << 36))
		src = (const char *)(uintptr_t)si->cmdline_paddr;
	if (src)
		while (n < CMDLINE_MAX - 1 && src[n]) {
			char c = src[n];
			/* keep it printable: control characters become spaces */
			cmdline_buf[n++] = (c < ' ' || c == 0x7f) ? ' ' : c;
		}
	cmdline_buf[n] = 0;
	memcpy(cmdline_tok, cmdline_buf, n + 1);
	for (size_t i = 0; i < n; i++)
		if (cmdline_tok[i] == ' ')
			cmdline_tok[i] = 0;
}

const char *cmdline_raw(void)
{
	return cmdline_buf;
}

const char *cmdline_get(const char *key)
{
	size_t klen = strlen(key), n = strlen(cmdline_buf);
	const char *found = NULL;
	size_t i = 0;

	while (i < n) {
		char *tok = &cmdline_tok[i];
		size_t tlen = strlen(tok);

		if (tlen >= klen && memcmp(tok, key, klen) == 0) {
			if (tok[klen] == 0)
				found = "";
			else if (tok[klen] == '=')
				found = tok + klen + 1;
		}
		i += tlen + 1;
	}
	return found;
}

int parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (!s || *s < '0' || *s > '9')
		return -1;
	for (; *s >= '0' && *s <= '9'; s++) {
		unsigned d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	if (*s)
		return -1;
	*out = v;
	return 0;
}

int parse_size(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	unsigned shift = 0;

	if (!s || *s < '0' || *s > '9')
		return -1;
	for (; *s >= '0' && *s <= '9'; s++) {
		unsigned d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	switch (*s) {
	case 'k':
	case 'K':
		shift = 10;
		s++;
		break;
	case 'm':
	case 'M':
		shift = 20;
		s++;
		break;
	case 'g':
	case 'G':
		shift = 30;
		s++;
		break;
	case 't':
	case 'T':
		shift = 40;
		s++;
		break;
	default:
		break;
	}
	if (shift && *s == 'i')
		s++;
	if (*s == 'b' || *s == 'B')
		s++;
	if (*s)
		return -1;
	if (shift && v > (UINT64_MAX >> shift))
		return -1;
	*out = v << shift;
	return 0;
}

/* ---- RAM map -------------------------------------------------------------------------------- */
#define RAM_MAX_ENTRIES 32
#define RAM_DEFAULT (128ull << 20) /* must match DEF_UNITS in boot.S */

static struct {
	uint64_t addr, size;
} ram[RAM_MAX_ENTRIES];
static int ram_nr;

void ram_init(const struct hvm_start_info *si)
{
	ram_nr = 0;
	if (si->magic == HVM_START_MAGIC && si->version >= 1 && si->memmap_paddr &&
	    si->memmap_paddr < (1ull << 32)) {
		const struct hvm_memmap_table_entry *e =
			(const struct hvm_memmap_table_entry *)(uintptr_t)si->memmap_paddr;
		uint32_t n = si->memmap_entries > 128 ? 128 : si->memmap_entries;

		for (uint32_t i = 0; i < n && ram_nr < RAM_MAX_ENTRIES; i++) {
			if (e[i].type != 1 || !e[i].size || e[i].addr + e[i].size < e[i].addr)
				continue;
			ram[ram_nr].addr = e[i].addr;
			ram[ram_nr].size = e[i].size;
			ram_nr++;
		}
	}
	if (!ram_nr) {
		ram[0].addr = 0;
		ram[0].size = RAM_DEFAULT;
		ram_nr = 1;
		puts("guest: no memmap in start_info, assuming 128 MiB of RAM\n");
	}
}

uint64_t ram_total(void)
{
	uint64_t t = 0;

	for (int i = 0; i < ram_nr; i++)
		t += ram[i].size;
	return t;
}

bool ram_contains(uint64_t gpa, uint64_t len)
{
	if (gpa + len < gpa)
		return false;
	for (int i = 0; i < ram_nr; i++)
		if (gpa >= ram[i].addr && gpa + len <= ram[i].addr + ram[i].size)
			return true;
	return false;
}
