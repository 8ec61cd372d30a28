/* errf.h — the one error helper: a one-line message into the caller's buffer, plus a code. */
#ifndef DOPPEL_COMMON_ERRF_H
#define DOPPEL_COMMON_ERRF_H

#include <stddef.h>

/* Format the message into err (errlen bytes; err may be NULL or errlen 0: nothing written) and
 * return rc, so error paths read `return errf(err, errlen, -EINVAL, "...", ...);`. */
int errf(char *err, size_t errlen, int rc, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
