/* errf.c — the one error helper: a one-line message into the caller's buffer, plus a code. */
#include <stdarg.h>
#include <stdio.h>

#include "common/errf.h"

int errf(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}
