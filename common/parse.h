/* parse.h — small command-line helpers: size and integer parsing, VM names, control socket paths. */
#ifndef DOPPEL_CLI_H
#define DOPPEL_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Directory holding the per-VM control sockets. */
#define CTL_DIR "/run/doppel"
#define CLI_NAME_MAX 64

/* Parse a byte size: decimal digits, then an optional unit K, M, G or T (powers of 1024, case-insensitive),
 * optionally followed by "iB" or "B" ("4K", "4KiB", "4KB", "512", "512B"). No signs, spaces, hex or
 * fractions. Returns 0 and sets *out, -EINVAL for malformed input (*out untouched), -ERANGE if the value
 * does not fit in 64 bits. */
int parse_size(const char *s, uint64_t *out) __attribute__((warn_unused_result));

/* Parse a plain decimal unsigned integer (digits only) within [min, max]. Returns 0 and sets *out,
 * -EINVAL for malformed input, -ERANGE if it overflows or lies outside [min, max]. */
int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out) __attribute__((warn_unused_result));

/* A VM name is 1..CLI_NAME_MAX characters from [A-Za-z0-9._-], not starting with '-' or '.'
 * (so it never looks like an option or a hidden/relative path). NULL is invalid. */
bool cli_name_valid(const char *name);

/* Write CTL_DIR "/NAME.sock" into buf. Returns buf, or NULL if the name is invalid or buf is too small. */
const char *ctl_default_path(const char *name, char *buf, size_t len);

#endif
