/* event.h — a VM's event log: JSON lines appended to a file by a background thread, recent ones kept in memory. */
#ifndef DOPPEL_VMM_EVENT_H
#define DOPPEL_VMM_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct json_object;
struct evlog;

/*
 * One event is one JSON object on one line:
 *     {"seq":12,"time":1764420000.123,"vm":"vm1","type":"failover", ...the caller's fields}
 * seq counts up by one per event, across restarts of the VM process (continued from the file's last
 * line). evlog_emit never does I/O: it formats the line and queues it; a writer thread appends queued
 * lines with one writev per batch and fdatasync()s after each batch. The queue is bounded: when the
 * disk cannot keep up, events are dropped from the file (never from memory) and counted, and the
 * writer appends an "events-dropped" event with the count as soon as it can. The last
 * EVLOG_RING events stay in memory (for `doppel events` and status) whether or not there is a file.
 */
#define EVLOG_RING 512
#define EVLOG_QUEUE 1024
#define EVLOG_TYPE_MAX 32

/* path NULL: in memory only. queue_cap 0: EVLOG_QUEUE. Creates missing parent directories (0755),
 * the file 0640 with O_APPEND. Returns 0 or -errno with one line in err. */
int evlog_open(struct evlog **out, const char *path, const char *vm, size_t queue_cap, char *err,
	       size_t errlen) __attribute__((warn_unused_result));

/* Write what is queued, stop the writer, close, free. NULL-safe. */
void evlog_close(struct evlog *l);

/* Record an event of `type` (1..EVLOG_TYPE_MAX of a-z 0-9 -) with the keys of `fields` (an object or
 * NULL; ownership taken in every case; keys seq, time, vm and type are ignored). Any thread.
 * Returns the event's seq (>= 1), or -EINVAL (bad type or fields) / -ENOMEM. */
int64_t evlog_emit(struct evlog *l, const char *type, struct json_object *fields);

/* The events with seq > since still in memory, oldest first, at most max (an array; NULL when out of
 * memory). *next: the seq to pass as `since` next time (the last one returned, or since).
 * *missed: how many events after `since` are no longer in memory. */
struct json_object *evlog_since(struct evlog *l, uint64_t since, int max, uint64_t *next, uint64_t *missed);

/* Event seq (a new object), or NULL when it is no longer in memory. */
struct json_object *evlog_get(struct evlog *l, uint64_t seq);

/* The newest event of `type` still in memory (a new object), or NULL. */
struct json_object *evlog_last(struct evlog *l, const char *type);

struct evlog_stats {
	uint64_t emitted; /* events recorded (the last seq of this process minus the first) */
	uint64_t written; /* lines appended to the file */
	uint64_t dropped; /* lines dropped from the file (queue full) */
	uint64_t write_errors;
	uint64_t queued; /* waiting for the writer now */
	uint64_t last_seq;
};
void evlog_get_stats(struct evlog *l, struct evlog_stats *st);

/* The file's path, or NULL when in memory only. */
const char *evlog_path(const struct evlog *l);

/* Wait until everything queued so far is written (or dropped); tests and orderly shutdown. Returns 0
 * or -ETIMEDOUT after timeout_ms. */
int evlog_flush(struct evlog *l, int timeout_ms);

#endif
