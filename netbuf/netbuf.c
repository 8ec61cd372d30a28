/* netbuf.c — output commit buffer: frames held per epoch, released in order when the epoch is acknowledged. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "netbuf/netbuf.h"

struct frame {
	struct frame *next;
	uint64_t epoch; /* 0: open segment */
	int netidx;
	size_t len;
	uint8_t data[];
};

struct netbuf {
	pthread_mutex_t lock;
	struct frame *head, *tail;
	struct frame *first_open; /* first frame of the open segment, NULL when empty */
	size_t max_bytes, max_frames;
	uint64_t last_mark;
	bool holding;
	bool pressured; /* pressure reported since the last mark */
	netbuf_out_fn out;
	void *out_opaque;
	netbuf_pressure_fn pressure;
	void *pressure_opaque;
	struct netbuf_stats st;
};

int netbuf_new(struct netbuf **out, size_t max_bytes, size_t max_frames, netbuf_out_fn out_fn, void *opaque)
{
	struct netbuf *nb;

	*out = NULL;
	if (!out_fn)
		return -EINVAL;
	nb = calloc(1, sizeof(*nb));
	if (!nb)
		return -ENOMEM;
	pthread_mutex_init(&nb->lock, NULL);
	nb->max_bytes = max_bytes ? max_bytes : NETBUF_DEFAULT_BYTES;
	nb->max_frames = max_frames ? max_frames : NETBUF_DEFAULT_FRAMES;
	nb->out = out_fn;
	nb->out_opaque = opaque;
	*out = nb;
	return 0;
}

void netbuf_free(struct netbuf *nb)
{
	struct frame *f, *n;

	if (!nb)
		return;
	for (f = nb->head; f; f = n) {
		n = f->next;
		free(f);
	}
	pthread_mutex_destroy(&nb->lock);
	free(nb);
}

void netbuf_set_pressure_cb(struct netbuf *nb, netbuf_pressure_fn fn, void *opaque)
{
	pthread_mutex_lock(&nb->lock);
	nb->pressure = fn;
	nb->pressure_opaque = opaque;
	pthread_mutex_unlock(&nb->lock);
}

void netbuf_begin(struct netbuf *nb)
{
	pthread_mutex_lock(&nb->lock);
	nb->holding = true;
	nb->st.holding = true;
	pthread_mutex_unlock(&nb->lock);
}

int netbuf_hold(struct netbuf *nb, int netidx, const void *frame, size_t len)
{
	struct frame *f;
	bool over;

	if (!len || len > NETBUF_MAX_FRAME) {
		__atomic_add_fetch(&nb->st.dropped, 1, __ATOMIC_RELAXED);
		return -EINVAL;
	}
	pthread_mutex_lock(&nb->lock);
	if (!nb->holding) {
		nb->st.passthrough_frames++;
		nb->out(nb->out_opaque, netidx, frame, len);
		pthread_mutex_unlock(&nb->lock);
		return 1;
	}
	if (nb->st.held_bytes + len > nb->max_bytes || nb->st.held_frames + 1 > nb->max_frames) {
		nb->st.dropped++;
		pthread_mutex_unlock(&nb->lock);
		return -ENOBUFS;
	}
	f = malloc(sizeof(*f) + len);
	if (!f) {
		nb->st.dropped++;
		pthread_mutex_unlock(&nb->lock);
		return -ENOMEM;
	}
	f->next = NULL;
	f->epoch = 0;
	f->netidx = netidx;
	f->len = len;
	memcpy(f->data, frame, len);
	if (nb->tail)
		nb->tail->next = f;
	else
		nb->head = f;
	nb->tail = f;
	if (!nb->first_open)
		nb->first_open = f;
	nb->st.held_frames++;
	nb->st.held_bytes += len;
	over = nb->st.held_bytes * 4 > nb->max_bytes * 3 || nb->st.held_frames * 4 > nb->max_frames * 3;
	if (over && !nb->pressured && nb->pressure) {
		nb->pressured = true;
		nb->st.pressure_events++;
		nb->pressure(nb->pressure_opaque);
	}
	pthread_mutex_unlock(&nb->lock);
	return 0;
}

int netbuf_mark(struct netbuf *nb, uint64_t epoch)
{
	int n = 0;

	pthread_mutex_lock(&nb->lock);
	if (epoch <= nb->last_mark || !epoch) {
		pthread_mutex_unlock(&nb->lock);
		return -EINVAL;
	}
	for (struct frame *f = nb->first_open; f; f = f->next, n++)
		f->epoch = epoch;
	nb->first_open = NULL;
	nb->last_mark = epoch;
	nb->pressured = false;
	pthread_mutex_unlock(&nb->lock);
	return n;
}

/* Lock held. Output and free frames from the head while pred holds. */
static int drain(struct netbuf *nb, uint64_t acked, bool all)
{
	int n = 0;

	while (nb->head && (all || (nb->head->epoch && nb->head->epoch <= acked))) {
		struct frame *f = nb->head;

		nb->head = f->next;
		if (!nb->head)
			nb->tail = NULL;
		if (nb->first_open == f)
			nb->first_open = NULL;
		nb->out(nb->out_opaque, f->netidx, f->data, f->len);
		nb->st.held_frames--;
		nb->st.held_bytes -= f->len;
		nb->st.released_frames++;
		nb->st.released_bytes += f->len;
		free(f);
		n++;
	}
	return n;
}

int netbuf_release(struct netbuf *nb, uint64_t acked)
{
	int n;

	pthread_mutex_lock(&nb->lock);
	n = drain(nb, acked, false);
	pthread_mutex_unlock(&nb->lock);
	return n;
}

int netbuf_release_all(struct netbuf *nb)
{
	int n;

	pthread_mutex_lock(&nb->lock);
	n = drain(nb, 0, true);
	nb->first_open = NULL;
	nb->holding = false;
	nb->st.holding = false;
	nb->pressured = false;
	pthread_mutex_unlock(&nb->lock);
	return n;
}

int netbuf_drop_all(struct netbuf *nb)
{
	int n = 0;

	pthread_mutex_lock(&nb->lock);
	while (nb->head) {
		struct frame *f = nb->head;

		nb->head = f->next;
		nb->st.held_frames--;
		nb->st.held_bytes -= f->len;
		nb->st.dropped++;
		free(f);
		n++;
	}
	nb->tail = nb->first_open = NULL;
	nb->holding = true;
	nb->st.holding = true;
	nb->pressured = false;
	pthread_mutex_unlock(&nb->lock);
	return n;
}

void netbuf_get_stats(struct netbuf *nb, struct netbuf_stats *st)
{
	pthread_mutex_lock(&nb->lock);
	*st = nb->st;
	st->dropped = __atomic_load_n(&nb->st.dropped, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&nb->lock);
}
