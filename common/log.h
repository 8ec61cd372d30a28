/* log.h — the one logging API of host code: levels, monotonic timestamps, component tags. */
#ifndef DOPPEL_COMMON_LOG_H
#define DOPPEL_COMMON_LOG_H

#include <stddef.h>
#include <stdint.h>

// clang-format off
/*
 * Every message has a level, a component tag ("hv", "remus", "migrate", "vmm", ...), the VM it is
 * about (may be NULL) and one line of text (newlines in it become spaces). Where it goes is the
 * process's choice, made once at start-up by the program (never by library code): stderr by
 * default, as
 *     doppel: [  12.345678] warn  remus vm1: standby silent for 210 ms
 * (monotonic seconds since the logger was first configured or used), and optionally also as JSON
 * lines to a file
 *     {"t":12.345678,"wall":1764420000.123,"level":"warn","component":"remus","vm":"vm1","msg":"..."}
 * ("vm" absent when NULL), or to a caller-supplied sink (tests, an embedding program). Messages
 * above the threshold level are dropped before they are formatted. Thread-safe: each line is
 * written with one writev(2), so lines of concurrent threads never interleave.
 */
// clang-format on
enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

void log_msg(enum log_level lvl, const char *component, const char *vm, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#define log_error(comp, vm, ...) log_msg(LOG_ERROR, comp, vm, __VA_ARGS__)
#define log_warn(comp, vm, ...) log_msg(LOG_WARN, comp, vm, __VA_ARGS__)
#define log_info(comp, vm, ...) log_msg(LOG_INFO, comp, vm, __VA_ARGS__)
#define log_debug(comp, vm, ...) log_msg(LOG_DEBUG, comp, vm, __VA_ARGS__)

/* Threshold: messages at or below it are emitted (default LOG_INFO). */
void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);
/* "error", "warn", "info", "debug" -> level. 0 or -EINVAL. */
int log_level_parse(const char *s, enum log_level *out) __attribute__((warn_unused_result));
const char *log_level_name(enum log_level lvl);

/* Also append JSON lines to `path` (created 0600, O_APPEND). NULL closes it.
 * Returns 0 or -errno with one line in err. */
int log_set_json_file(const char *path, char *err, size_t errlen) __attribute__((warn_unused_result));
/* stderr output on (default) or off. */
void log_set_stderr(int on);
/* systemd journal output (sd_journal_send: MESSAGE, PRIORITY, SYSLOG_IDENTIFIER=doppel,
 * DOPPEL_COMPONENT, DOPPEL_VM) on or off (default). `doppel run --log journal` turns it on and
 * stderr off. */
void log_set_journal(int on);

/* A caller-supplied sink, called for every emitted message (after stderr/JSON); NULL removes it.
 * Called on the logging thread, unlocked: it must be thread-safe itself. */
typedef void (*log_sink_fn)(void *opaque, enum log_level lvl, const char *component, const char *vm,
			    const char *msg);
void log_set_sink(log_sink_fn fn, void *opaque);

#endif
