/* parse.c — small command-line helpers: size and integer parsing, VM names, control socket paths. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/parse.h"

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static char lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* Parse the leading decimal digits of s; *end points past them. -EINVAL if none, -ERANGE on overflow. */
static int parse_digits(const char *s, const char **end, uint64_t *out)
{
	uint64_t v = 0;
	const char *p = s;

	if (!s || !is_digit(*s))
		return -EINVAL;
	for (; is_digit(*p); p++) {
		uint64_t d = (uint64_t)(*p - '0');

		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*end = p;
	*out = v;
	return 0;
}

int parse_size(const char *s, uint64_t *out)
{
	const char *p;
	uint64_t v;
	unsigned shift = 0;
	int rc;

	rc = parse_digits(s, &p, &v);
	if (rc)
		return rc;
	switch (lower(*p)) {
	case 'k':
		shift = 10;
		p++;
		break;
	case 'm':
		shift = 20;
		p++;
		break;
	case 'g':
		shift = 30;
		p++;
		break;
	case 't':
		shift = 40;
		p++;
		break;
	default:
		break;
	}
	if (shift && lower(p[0]) == 'i' && lower(p[1]) == 'b')
		p += 2;
	else if (lower(p[0]) == 'b')
		p++;
	if (*p)
		return -EINVAL;
	if (shift && v > (UINT64_MAX >> shift))
		return -ERANGE;
	*out = v << shift;
	return 0;
}

int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	const char *p;
	uint64_t v;
	int rc;

	rc = parse_digits(s, &p, &v);
	if (rc)
		return rc;
	if (*p)
		return -EINVAL;
	if (v < min || v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

bool cli_name_valid(const char *name)
{
	size_t i;

	if (!name || !name[0] || name[0] == '-' || name[0] == '.')
		return false;
	for (i = 0; name[i]; i++) {
		char c = name[i];

		if (i >= CLI_NAME_MAX)
			return false;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '.' ||
		      c == '_' || c == '-'))
			return false;
	}
	return true;
}

const char *ctl_default_path(const char *name, char *buf, size_t len)
{
	int n;

	if (!cli_name_valid(name) || !buf)
		return NULL;
	n = snprintf(buf, len, CTL_DIR "/%s.sock", name);
	if (n < 0 || (size_t)n >= len)
		return NULL;
	return buf;
}
