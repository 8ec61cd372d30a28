/* log.c — levels, monotonic timestamps and component tags to stderr, a JSON-lines file or a sink.
 */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "common/clock.h"
#include "common/errf.h"
#include "common/log.h"

/* Process-wide output settings, chosen once by the program's main(); all atomics, so any thread may
 * log while another changes them. Per-VM state lives in the messages (the vm tag), not here. */
static struct {
	int level;
	int to_stderr;
	int json_fd;
	int to_journal;
	uint64_t t0;
	log_sink_fn sink;
	void *sink_opaque;
} L = {.level = LOG_INFO, .to_stderr = 1, .json_fd = -1};

static const char *const names[] = {"error", "warn", "info", "debug"};

const char *log_level_name(enum log_level lvl)
{
	return (unsigned)lvl < 4 ? names[lvl] : "?";
}

int log_level_parse(const char *s, enum log_level *out)
{
	for (int i = 0; s && i < 4; i++)
		if (!strcmp(s, names[i])) {
			*out = (enum log_level)i;
			return 0;
		}
	return -EINVAL;
}

static uint64_t since_start(void)
{
	uint64_t now = now_ns(), zero = 0;

	__atomic_compare_exchange_n(&L.t0, &zero, now, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
	return now - __atomic_load_n(&L.t0, __ATOMIC_RELAXED);
}

void log_set_level(enum log_level lvl)
{
	(void)since_start(); /* the program configures the logger at start-up: t counts from here */
	__atomic_store_n(&L.level, (int)lvl, __ATOMIC_RELAXED);
}

enum log_level log_get_level(void)
{
	return (enum log_level)__atomic_load_n(&L.level, __ATOMIC_RELAXED);
}

void log_set_stderr(int on)
{
	__atomic_store_n(&L.to_stderr, on, __ATOMIC_RELAXED);
}

void log_set_journal(int on)
{
	__atomic_store_n(&L.to_journal, on, __ATOMIC_RELAXED);
}

/* log_journal.c (apart: <syslog.h>, which sd-journal.h pulls in, defines LOG_INFO and LOG_DEBUG) */
void log_journal_send(int prio, const char *comp, const char *vm, const char *msg);

static void emit_journal(enum log_level lvl, const char *comp, const char *vm, const char *msg)
{
	static const int prio[] = {3, 4, 6, 7}; /* syslog LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG */

	log_journal_send(prio[(unsigned)lvl < 4 ? lvl : 3], comp, vm, msg);
}

void log_set_sink(log_sink_fn fn, void *opaque)
{
	__atomic_store_n(&L.sink_opaque, opaque, __ATOMIC_RELAXED);
	__atomic_store_n(&L.sink, fn, __ATOMIC_RELEASE);
}

int log_set_json_file(const char *path, char *err, size_t errlen)
{
	int fd = -1, old;

	if (path) {
		fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd < 0)
			return errf(err, errlen, -errno, "cannot open log file %s: %s", path,
				    strerror(errno));
	}
	old = __atomic_exchange_n(&L.json_fd, fd, __ATOMIC_ACQ_REL);
	if (old >= 0)
		close(old);
	return 0;
}

/* text plus a newline as one write (so concurrent writers' lines never interleave) */
static void write_line(int fd, const char *txt, size_t len)
{
	struct iovec iov[2] = {{(void *)txt, len}, {(void *)"\n", 1}};
	ssize_t n;

	do
		n = writev(fd, iov, 2);
	while (n < 0 && errno == EINTR);
	/* a short or failed write is dropped: there is nowhere to report a failing log */
}

static void emit_json(int fd, uint64_t t, enum log_level lvl, const char *comp, const char *vm,
		      const char *msg)
{
	struct json_object *o = json_object_new_object();
	struct timespec wall;
	char num[48];

	if (!o)
		return;
	clock_gettime(CLOCK_REALTIME, &wall);
	/* fixed decimals (µs, ms), not a double's 17 significant digits */
	snprintf(num, sizeof(num), "%llu.%06llu", (unsigned long long)(t / 1000000000ull),
		 (unsigned long long)(t / 1000 % 1000000));
	json_object_object_add(o, "t", json_object_new_double_s((double)t / 1e9, num));
	snprintf(num, sizeof(num), "%lld.%03ld", (long long)wall.tv_sec, wall.tv_nsec / 1000000);
	json_object_object_add(
		o, "wall", json_object_new_double_s((double)wall.tv_sec + (double)wall.tv_nsec / 1e9, num));
	json_object_object_add(o, "level", json_object_new_string(log_level_name(lvl)));
	json_object_object_add(o, "component", json_object_new_string(comp ? comp : ""));
	if (vm)
		json_object_object_add(o, "vm", json_object_new_string(vm));
	json_object_object_add(o, "msg", json_object_new_string(msg));
	/* the JSON text and its newline in one writev(2): a whole line or nothing, never a cut one
	 */
	size_t len = 0;
	const char *txt = json_object_to_json_string_length(
		o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
	if (txt)
		write_line(fd, txt, len);
	json_object_put(o);
}

void log_msg(enum log_level lvl, const char *component, const char *vm, const char *fmt, ...)
{
	char msg[1024], line[1280];
	va_list ap;
	uint64_t t;
	int n, fd;
	log_sink_fn sink;

	if ((int)lvl > __atomic_load_n(&L.level, __ATOMIC_RELAXED))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	for (char *p = msg; *p; p++) /* one message, one line */
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	t = since_start();
	if (__atomic_load_n(&L.to_stderr, __ATOMIC_RELAXED)) {
		n = snprintf(line, sizeof(line), "doppel: [%5llu.%06llu] %-5s %s%s%s: %s",
			     (unsigned long long)(t / 1000000000ull),
			     (unsigned long long)(t / 1000 % 1000000), log_level_name(lvl),
			     component ? component : "-", vm ? " " : "", vm ? vm : "", msg);
		if (n > 0)
			write_line(STDERR_FILENO, line,
				   (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
	}
	if (__atomic_load_n(&L.to_journal, __ATOMIC_RELAXED))
		emit_journal(lvl, component, vm, msg);
	fd = __atomic_load_n(&L.json_fd, __ATOMIC_ACQUIRE);
	if (fd >= 0)
		emit_json(fd, t, lvl, component, vm, msg);
	sink = __atomic_load_n(&L.sink, __ATOMIC_ACQUIRE);
	if (sink)
		sink(__atomic_load_n(&L.sink_opaque, __ATOMIC_RELAXED), lvl, component, vm, msg);
}
