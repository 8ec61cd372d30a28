/* netbuf.h — output commit: hold a guest's transmitted frames until the epoch that produced them is acknowledged. */
#ifndef DOPPEL_NETBUF_H
#define DOPPEL_NETBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Model. Frames arrive (netbuf_hold, any thread, e.g. a vCPU thread inside the VMM's tx hook) and are
 * appended to the "open" segment. netbuf_mark(e) closes the open segment: every frame held so far and
 * not yet marked belongs to epoch e. netbuf_release(acked) outputs, in arrival order, every frame of
 * every closed epoch <= acked. netbuf_release_all outputs everything (open segment included) and puts
 * the buffer in passthrough mode: later frames are output at once, until netbuf_begin holds again.
 *
 * Memory is bounded by max_bytes of frame payload and max_frames. When an arriving frame would take
 * the buffer past 3/4 of either bound, the pressure callback runs once per epoch (the VMM uses it to
 * force an early checkpoint); a frame that does not fit at all is dropped and counted.
 *
 * Output goes through out_fn (called with the netbuf lock held, so frames leave in order: it must not
 * call back into the netbuf). Thread-safe: one internal mutex.
 */

#define NETBUF_MAX_FRAME 65536u
#define NETBUF_DEFAULT_BYTES (4u << 20)
#define NETBUF_DEFAULT_FRAMES 4096u

typedef void (*netbuf_out_fn)(void *opaque, int netidx, const void *frame, size_t len);
typedef void (*netbuf_pressure_fn)(void *opaque);

struct netbuf;

struct netbuf_stats {
	uint64_t held_frames, held_bytes; /* currently held (open + closed epochs) */
	uint64_t released_frames, released_bytes; /* output after an ack or release-all */
	uint64_t passthrough_frames; /* output at once (not holding) */
	uint64_t dropped; /* frames dropped: buffer full, too big, no memory */
	uint64_t pressure_events; /* pressure callback runs */
	bool holding;
};

/* New buffer, in passthrough mode. max_bytes/max_frames 0 -> the defaults. out_fn required.
 * Returns 0 or -ENOMEM / -EINVAL. */
int netbuf_new(struct netbuf **out, size_t max_bytes, size_t max_frames, netbuf_out_fn out_fn, void *opaque)
	__attribute__((warn_unused_result));
/* Free, discarding held frames (they are not output). NULL-safe. */
void netbuf_free(struct netbuf *nb);
void netbuf_set_pressure_cb(struct netbuf *nb, netbuf_pressure_fn fn, void *opaque);

/* Start holding (from passthrough). Idempotent. */
void netbuf_begin(struct netbuf *nb);
/*
 * A frame from the guest. Returns 0 (held), 1 (passthrough: output now), -EINVAL (len 0 or over
 * NETBUF_MAX_FRAME: dropped), -ENOBUFS (buffer full: dropped), -ENOMEM (dropped).
 */
int netbuf_hold(struct netbuf *nb, int netidx, const void *frame, size_t len);
/* Close the open segment as epoch `epoch` (must be greater than the last mark; else -EINVAL and
 * nothing changes). Returns the number of frames the epoch got. */
int netbuf_mark(struct netbuf *nb, uint64_t epoch);
/* Output every frame of closed epochs <= acked, in order. Returns frames output. */
int netbuf_release(struct netbuf *nb, uint64_t acked);
/* Output everything held, in order, and switch to passthrough. Returns frames output. */
int netbuf_release_all(struct netbuf *nb);
/* Discard every held frame without output (a fenced primary: its unacknowledged output must never
 * leave) and keep holding: frames arriving later are held too. Returns the number dropped. */
int netbuf_drop_all(struct netbuf *nb);
void netbuf_get_stats(struct netbuf *nb, struct netbuf_stats *st);

#endif
