/* event.c — the per-VM event log: bounded queue, a writer thread appending JSON lines, a memory ring. */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/errf.h"
#include "common/log.h"
#include "vmm/event.h"

#define BATCH 64
#define JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

struct evlog {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* writer: work or stop */
	pthread_cond_t idle; /* flushers: queue drained */
	char vm[65];
	char path[PATH_MAX];
	int fd; /* -1: memory only */
	char *ring[EVLOG_RING]; /* line of seq s at s % EVLOG_RING */
	char *ring_type[EVLOG_RING];
	char **q; /* queue of lines for the writer (own copies) */
	size_t q_cap, q_head, q_len;
	bool busy; /* the writer is writing a batch */
	uint64_t first_seq, next_seq; /* seq of this process's first event; the next to assign */
	uint64_t written, dropped, unreported, write_errors;
	bool stop;
	pthread_t th;
	bool th_running;
};

static bool type_valid(const char *t)
{
	size_t n = t ? strlen(t) : 0;

	if (n < 1 || n > EVLOG_TYPE_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((t[i] >= 'a' && t[i] <= 'z') || (t[i] >= '0' && t[i] <= '9') || t[i] == '-'))
			return false;
	return true;
}

static double wall_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A field's value for the line: doubles with a readable number of decimals (not 17 digits), NaN and
 * infinities (not JSON) as null; everything else as it is. */
static struct json_object *field_value(struct json_object *val)
{
	char b[48];
	double d;

	if (!json_object_is_type(val, json_type_double))
		return json_object_get(val);
	d = json_object_get_double(val);
	if (!isfinite(d))
		return NULL;
	snprintf(b, sizeof(b), fabs(d) >= 1 ? "%.3f" : "%.6g", d);
	return json_object_new_double_s(d, b);
}

/* The line of one event (malloc'd), or NULL. Lock held (seq order = line order). */
static char *format_line(struct evlog *l, uint64_t seq, const char *type, struct json_object *fields)
{
	struct json_object *o = json_object_new_object();
	char num[40], *line = NULL;
	double w = wall_now();

	if (!o)
		return NULL;
	snprintf(num, sizeof(num), "%.3f", w);
	json_object_object_add(o, "seq", json_object_new_int64((int64_t)seq));
	json_object_object_add(o, "time", json_object_new_double_s(w, num));
	json_object_object_add(o, "vm", json_object_new_string(l->vm));
	json_object_object_add(o, "type", json_object_new_string(type));
	if (fields) {
		json_object_object_foreach(fields, k, val)
		{
			if (strcmp(k, "seq") && strcmp(k, "time") && strcmp(k, "vm") && strcmp(k, "type"))
				json_object_object_add(o, k, field_value(val));
		}
	}
	const char *s = json_object_to_json_string_ext(o, JSON_FLAGS);
	if (s)
		line = strdup(s);
	json_object_put(o);
	return line;
}

/* Put a line into the ring and (with a file) the queue. Lock held; line owned. */
static void store(struct evlog *l, uint64_t seq, const char *type, char *line)
{
	size_t i = seq % EVLOG_RING;

	free(l->ring[i]);
	free(l->ring_type[i]);
	l->ring[i] = line;
	l->ring_type[i] = strdup(type);
	if (l->fd < 0)
		return;
	if (l->q_len == l->q_cap) {
		l->dropped++;
		l->unreported++;
		return;
	}
	char *copy = strdup(line);
	if (!copy) {
		l->dropped++;
		l->unreported++;
		return;
	}
	l->q[(l->q_head + l->q_len) % l->q_cap] = copy;
	l->q_len++;
	pthread_cond_signal(&l->cond);
}

int64_t evlog_emit(struct evlog *l, const char *type, struct json_object *fields)
{
	int64_t rc;

	if (!l || !type_valid(type) || (fields && !json_object_is_type(fields, json_type_object))) {
		json_object_put(fields);
		return -EINVAL;
	}
	pthread_mutex_lock(&l->lock);
	uint64_t seq = l->next_seq;
	char *line = format_line(l, seq, type, fields);
	if (line) {
		l->next_seq++;
		store(l, seq, type, line);
		rc = (int64_t)seq;
	} else {
		rc = -ENOMEM;
	}
	pthread_mutex_unlock(&l->lock);
	json_object_put(fields);
	return rc;
}

/* Writer: take up to BATCH lines (plus an events-dropped line when some were dropped), write them
 * with one writev, fdatasync. */
static void *writer_main(void *arg)
{
	struct evlog *l = arg;
	char *batch[BATCH + 1];
	struct iovec iov[2 * (BATCH + 1)];
	bool warned = false;

	pthread_mutex_lock(&l->lock);
	for (;;) {
		while (!l->q_len && !l->unreported && !l->stop)
			pthread_cond_wait(&l->cond, &l->lock);
		if (!l->q_len && !l->unreported)
			break; /* stop, nothing left */
		int n = 0;
		if (l->unreported) {
			struct json_object *f = json_object_new_object();
			json_object_object_add(f, "count", json_object_new_int64((int64_t)l->unreported));
			char *line = format_line(l, l->next_seq, "events-dropped", f);
			json_object_put(f);
			if (line && (batch[n] = strdup(line))) {
				n++;
				uint64_t seq = l->next_seq++;
				size_t i = seq % EVLOG_RING;
				free(l->ring[i]);
				free(l->ring_type[i]);
				l->ring[i] = line;
				l->ring_type[i] = strdup("events-dropped");
				l->unreported = 0;
			} else {
				free(line);
			}
		}
		while (l->q_len && n < BATCH + 1) {
			batch[n++] = l->q[l->q_head];
			l->q_head = (l->q_head + 1) % l->q_cap;
			l->q_len--;
		}
		l->busy = true;
		pthread_mutex_unlock(&l->lock);
		for (int i = 0; i < n; i++) {
			iov[2 * i] = (struct iovec){batch[i], strlen(batch[i])};
			iov[2 * i + 1] = (struct iovec){(void *)"\n", 1};
		}
		size_t total = 0;
		for (int i = 0; i < 2 * n; i++)
			total += iov[i].iov_len;
		ssize_t w;
		do
			w = writev(l->fd, iov, 2 * n);
		while (w < 0 && errno == EINTR);
		int e = w < 0 ? errno : 0;
		if (w == (ssize_t)total)
			(void)fdatasync(l->fd);
		for (int i = 0; i < n; i++)
			free(batch[i]);
		pthread_mutex_lock(&l->lock);
		l->busy = false;
		if (w == (ssize_t)total) {
			l->written += (uint64_t)n;
		} else {
			l->write_errors++;
			l->dropped += (uint64_t)n;
			if (!warned) /* once: a full disk must not flood the log */
				log_warn("events", l->vm, "cannot append to %s: %s", l->path,
					 e ? strerror(e) : "short write");
			warned = true;
		}
		if (!l->q_len)
			pthread_cond_broadcast(&l->idle);
	}
	pthread_cond_broadcast(&l->idle);
	pthread_mutex_unlock(&l->lock);
	return NULL;
}

static int mkdir_parents(const char *path, char *err, size_t errlen)
{
	char dir[PATH_MAX];

	snprintf(dir, sizeof(dir), "%s", path);
	for (char *p = dir + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(dir, 0755) < 0 && errno != EEXIST)
			return errf(err, errlen, -errno, "cannot create directory %s: %s", dir,
				    strerror(errno));
		*p = '/';
	}
	return 0;
}

/* The seq of the file's last complete line (0: none readable): numbering continues after it. */
static uint64_t last_seq_of(int fd)
{
	char buf[8192];
	off_t end = lseek(fd, 0, SEEK_END), off;
	ssize_t n;
	uint64_t seq = 0;

	if (end <= 0)
		return 0;
	off = end > (off_t)sizeof(buf) - 1 ? end - (off_t)sizeof(buf) + 1 : 0;
	n = pread(fd, buf, sizeof(buf) - 1, off);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	while (n > 0 && buf[n - 1] == '\n')
		buf[--n] = '\0';
	char *line = strrchr(buf, '\n');
	line = line ? line + 1 : (off == 0 ? buf : NULL);
	struct json_object *o = line ? json_tokener_parse(line) : NULL, *j;
	if (o && json_object_object_get_ex(o, "seq", &j) && json_object_is_type(j, json_type_int) &&
	    json_object_get_int64(j) > 0)
		seq = (uint64_t)json_object_get_int64(j);
	json_object_put(o);
	return seq;
}

int evlog_open(struct evlog **out, const char *path, const char *vm, size_t queue_cap, char *err,
	       size_t errlen)
{
	struct evlog *l = calloc(1, sizeof(*l));
	int rc;

	*out = NULL;
	if (!l)
		return errf(err, errlen, -ENOMEM, "out of memory");
	l->fd = -1;
	l->next_seq = 1;
	snprintf(l->vm, sizeof(l->vm), "%s", vm ? vm : "");
	pthread_mutex_init(&l->lock, NULL);
	pthread_cond_init(&l->cond, NULL);
	pthread_cond_init(&l->idle, NULL);
	if (path) {
		if (!*path || strlen(path) >= sizeof(l->path)) {
			rc = errf(err, errlen, -EINVAL, "bad event log path (1-%zu bytes)",
				  sizeof(l->path) - 1);
			goto err;
		}
		snprintf(l->path, sizeof(l->path), "%s", path);
		rc = mkdir_parents(path, err, errlen);
		if (rc)
			goto err;
		l->fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0640);
		if (l->fd < 0) {
			rc = errf(err, errlen, -errno, "cannot open event log %s: %s", path, strerror(errno));
			goto err;
		}
		l->next_seq = last_seq_of(l->fd) + 1;
		l->q_cap = queue_cap ? queue_cap : EVLOG_QUEUE;
		l->q = calloc(l->q_cap, sizeof(*l->q));
		if (!l->q) {
			rc = errf(err, errlen, -ENOMEM, "out of memory");
			goto err;
		}
		rc = -pthread_create(&l->th, NULL, writer_main, l);
		if (rc) {
			errf(err, errlen, rc, "cannot start the event writer: %s", strerror(-rc));
			goto err;
		}
		l->th_running = true;
	}
	l->first_seq = l->next_seq;
	*out = l;
	return 0;
err:
	evlog_close(l);
	return rc;
}

void evlog_close(struct evlog *l)
{
	if (!l)
		return;
	if (l->th_running) {
		pthread_mutex_lock(&l->lock);
		l->stop = true;
		pthread_cond_signal(&l->cond);
		pthread_mutex_unlock(&l->lock);
		pthread_join(l->th, NULL);
	}
	if (l->fd >= 0)
		close(l->fd);
	for (size_t i = 0; l->q && i < l->q_len; i++)
		free(l->q[(l->q_head + i) % l->q_cap]);
	free(l->q);
	for (int i = 0; i < EVLOG_RING; i++) {
		free(l->ring[i]);
		free(l->ring_type[i]);
	}
	pthread_cond_destroy(&l->idle);
	pthread_cond_destroy(&l->cond);
	pthread_mutex_destroy(&l->lock);
	free(l);
}

/* The oldest seq still in memory. Lock held. */
static uint64_t oldest(const struct evlog *l)
{
	uint64_t lo = l->next_seq > EVLOG_RING ? l->next_seq - EVLOG_RING : 1;

	return lo > l->first_seq ? lo : l->first_seq;
}

static struct json_object *parse_at(struct evlog *l, uint64_t seq)
{
	const char *line = l->ring[seq % EVLOG_RING];

	return line ? json_tokener_parse(line) : NULL;
}

struct json_object *evlog_since(struct evlog *l, uint64_t since, int max, uint64_t *next, uint64_t *missed)
{
	struct json_object *a = json_object_new_array();

	*next = since;
	*missed = 0;
	if (!a)
		return NULL;
	pthread_mutex_lock(&l->lock);
	uint64_t lo = oldest(l), s = since + 1;
	if (s < lo) {
		*missed = lo - s;
		s = lo;
	}
	for (; s < l->next_seq && max > 0; s++, max--) {
		struct json_object *e = parse_at(l, s);
		if (e)
			json_object_array_add(a, e);
		*next = s;
	}
	pthread_mutex_unlock(&l->lock);
	return a;
}

struct json_object *evlog_get(struct evlog *l, uint64_t seq)
{
	struct json_object *e = NULL;

	pthread_mutex_lock(&l->lock);
	if (seq >= oldest(l) && seq < l->next_seq)
		e = parse_at(l, seq);
	pthread_mutex_unlock(&l->lock);
	return e;
}

struct json_object *evlog_last(struct evlog *l, const char *type)
{
	struct json_object *e = NULL;

	pthread_mutex_lock(&l->lock);
	for (uint64_t s = l->next_seq; s-- > oldest(l) && !e;) {
		const char *t = l->ring_type[s % EVLOG_RING];
		if (t && !strcmp(t, type))
			e = parse_at(l, s);
	}
	pthread_mutex_unlock(&l->lock);
	return e;
}

void evlog_get_stats(struct evlog *l, struct evlog_stats *st)
{
	pthread_mutex_lock(&l->lock);
	*st = (struct evlog_stats){.emitted = l->next_seq - l->first_seq,
				   .written = l->written,
				   .dropped = l->dropped,
				   .write_errors = l->write_errors,
				   .queued = l->q_len,
				   .last_seq = l->next_seq - 1};
	pthread_mutex_unlock(&l->lock);
}

const char *evlog_path(const struct evlog *l)
{
	return l->fd >= 0 ? l->path : NULL;
}

int evlog_flush(struct evlog *l, int timeout_ms)
{
	struct timespec ts;
	int rc = 0;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000;
	ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&l->lock);
	while (l->th_running && (l->q_len || l->busy || l->unreported) && rc == 0)
		rc = pthread_cond_timedwait(&l->idle, &l->lock, &ts);
	pthread_mutex_unlock(&l->lock);
	return rc ? -ETIMEDOUT : 0;
}
