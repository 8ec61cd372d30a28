/* colo.c — COLO state shared by both sides: allocation, the SVM -> PVM writer queue, status. */
#include <errno.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "replication/remus_priv.h"
#include "common/clock.h"

static const char *const why_names[COLO_WHY_N] = {
	[COLO_WHY_MISMATCH] = "mismatch", [COLO_WHY_TIMEOUT] = "timeout", [COLO_WHY_QUEUE] = "queue",
	[COLO_WHY_PERIODIC] = "periodic", [COLO_WHY_INITIAL] = "initial",
};

const char *colo_why_name(enum colo_why w)
{
	return w < COLO_WHY_N ? why_names[w] : "?";
}

int colo_new(struct remus *r, struct colo **out)
{
	struct colo *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->r = r;
	c->txfd = -1;
	pthread_mutex_init(&c->txlock, NULL);
	pthread_cond_init(&c->txcond, NULL);
	pthread_mutex_init(&c->stash_lock, NULL);
	*out = c;
	return 0;
}

void colo_free(struct colo *c)
{
	if (!c)
		return;
	for (struct colo_qent *e = c->qhead, *n; e; e = n) {
		n = e->next;
		free(e);
	}
	colo_cmp_free(c->cmp);
	dirty_log_free(c->log);
	free(c->bm);
	free(c->merge);
	free(c->txbuf);
	free(c->txspare);
	free(c->txstash.buf);
	free(c->rxstash.buf);
	pthread_mutex_destroy(&c->stash_lock);
	pthread_cond_destroy(&c->txcond);
	pthread_mutex_destroy(&c->txlock);
	free(c);
}

/* ---- SVM -> PVM writer ------------------------------------------------------------------------- */

/* Room for need bytes in the queue (txlock held). */
static int txq_reserve(struct colo *c, size_t need)
{
	if (need <= c->txcap)
		return 0;
	size_t cap = c->txcap ? c->txcap : 65536;
	while (cap < need)
		cap *= 2;
	uint8_t *b = realloc(c->txbuf, cap);
	if (!b)
		return -ENOMEM;
	c->txbuf = b;
	c->txcap = cap;
	return 0;
}

/* Nothing queued and nobody writing (txlock held): send it from this thread, without waking the
 * writer (one hand-off less on the SVM's output path). What the socket does not take at once goes
 * to the front of the queue for the writer. 0, or -errno (the connection failed). */
static int txq_send_direct(struct colo *c, const void *hdr, size_t hlen, const void *body, size_t blen,
			   size_t pad)
{
	static const uint8_t zeros[8];
	struct iovec iov[3] = {{(void *)hdr, hlen}, {(void *)body, blen}, {(void *)zeros, pad}};
	size_t total = hlen + blen + pad, sent;
	ssize_t k;

	c->txsending = true;
	pthread_mutex_unlock(&c->txlock);
	do
		k = sendmsg(c->txfd, &(struct msghdr){.msg_iov = iov, .msg_iovlen = 3},
			    MSG_DONTWAIT | MSG_NOSIGNAL);
	while (k < 0 && errno == EINTR);
	pthread_mutex_lock(&c->txlock);
	c->txsending = false;
	pthread_cond_broadcast(&c->txcond);
	if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
		c->tx_failed = true;
		shutdown(c->txfd, SHUT_RDWR); /* the reader ends as "primary lost" */
		return -EPIPE;
	}
	sent = k > 0 ? (size_t)k : 0;
	c->out_direct++;
	if (sent == total)
		return 0;
	/* the rest goes first: records queued meanwhile follow it */
	int rc = txq_reserve(c, c->txlen + total - sent);
	if (rc) {
		c->tx_failed = true; /* a record cut in half: the stream cannot go on */
		shutdown(c->txfd, SHUT_RDWR);
		return rc;
	}
	memmove(c->txbuf + total - sent, c->txbuf, c->txlen);
	for (size_t i = 0, off = 0, dst = 0; i < 3; off += iov[i].iov_len, i++) {
		size_t a = sent > off ? sent - off : 0;
		if (a >= iov[i].iov_len)
			continue;
		memcpy(c->txbuf + dst, (const uint8_t *)iov[i].iov_base + a, iov[i].iov_len - a);
		dst += iov[i].iov_len - a;
	}
	c->txlen += total - sent;
	return 0;
}

int colo_txq_put(struct colo *c, const void *hdr, size_t hlen, const void *body, size_t blen, bool drop)
{
	static const uint8_t zeros[8];
	/* a RECORD's body (what follows the 16-byte message) is zero-padded to 8 bytes; a plain
	 * message (hlen 16, no body) needs none */
	size_t pad = (8 - ((hlen - REMUS_MSG_SIZE + blen) & 7)) & 7, need;
	int rc;

	pthread_mutex_lock(&c->txlock);
	if (!c->tx_running || c->tx_failed) {
		pthread_mutex_unlock(&c->txlock);
		return -ENOTCONN;
	}
	if (!c->txlen && !c->txsending && !c->txstop) {
		rc = txq_send_direct(c, hdr, hlen, body, blen, pad);
		if (c->txlen)
			pthread_cond_broadcast(&c->txcond);
		pthread_mutex_unlock(&c->txlock);
		return rc;
	}
	need = c->txlen + hlen + blen + pad;
	if (drop && need > COLO_TXQ_MAX) {
		c->out_dropped++;
		pthread_mutex_unlock(&c->txlock);
		return -ENOBUFS;
	}
	if (txq_reserve(c, need)) {
		pthread_mutex_unlock(&c->txlock);
		return -ENOMEM;
	}
	memcpy(c->txbuf + c->txlen, hdr, hlen);
	if (blen)
		memcpy(c->txbuf + c->txlen + hlen, body, blen);
	memcpy(c->txbuf + c->txlen + hlen + blen, zeros, pad);
	c->txlen = need;
	pthread_cond_broadcast(&c->txcond);
	pthread_mutex_unlock(&c->txlock);
	return 0;
}

/* Writes everything queued, in order, never while a caller sends directly; on stop, drains
 * first. A failed send shuts the socket: the reader then ends as "primary lost" (or the primary
 * already is). */
static void *writer_main(void *arg)
{
	struct colo *c = arg;

	pthread_mutex_lock(&c->txlock);
	for (;;) {
		while (c->txsending || (!c->txlen && !c->txstop))
			pthread_cond_wait(&c->txcond, &c->txlock);
		if (!c->txlen || c->tx_failed)
			break;
		uint8_t *b = c->txbuf;
		size_t n = c->txlen, cap = c->txcap;
		c->txbuf = c->txspare;
		c->txcap = c->txsparecap;
		c->txlen = 0;
		c->txsending = true;
		pthread_mutex_unlock(&c->txlock);
		size_t off = 0;
		while (off < n) {
			ssize_t k = send(c->txfd, b + off, n - off, MSG_NOSIGNAL);
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				break;
			off += (size_t)k;
		}
		pthread_mutex_lock(&c->txlock);
		c->txsending = false;
		pthread_cond_broadcast(&c->txcond);
		c->txspare = b;
		c->txsparecap = cap;
		if (off < n) {
			c->tx_failed = true;
			shutdown(c->txfd, SHUT_RDWR);
			break;
		}
	}
	pthread_mutex_unlock(&c->txlock);
	return NULL;
}

int colo_standby_begin(struct remus *r, int fd)
{
	struct colo *c = r->colo;
	struct timeval tv = {.tv_sec = 2};
	int rc;

	if (!c) {
		rc = colo_new(r, &c);
		if (rc)
			return rc;
		pthread_mutex_lock(&r->lock);
		r->colo = c;
		pthread_mutex_unlock(&r->lock);
	}
	free(c->bm);
	c->bm = calloc(dirty_bitmap_words(vm_mem(r->vm)->nr_pages), 8);
	if (!c->bm)
		return -ENOMEM;
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)); /* a primary not reading = lost */
	c->svm_running = c->in_ckpt = false; /* svm_paused stays: an ABANDONed session's hold */
	c->txfd = fd;
	c->txlen = 0;
	c->txstop = c->tx_failed = c->txsending = false;
	rc = pthread_create(&c->txthread, NULL, writer_main, c);
	if (rc)
		return -rc;
	pthread_mutex_lock(&c->txlock);
	c->tx_running = true;
	pthread_mutex_unlock(&c->txlock);
	return 0;
}

void colo_standby_end(struct remus *r)
{
	struct colo *c = r->colo;

	if (!c)
		return;
	pthread_mutex_lock(&c->txlock);
	bool running = c->tx_running;
	c->txstop = true;
	pthread_cond_signal(&c->txcond);
	pthread_mutex_unlock(&c->txlock);
	if (!running)
		return;
	pthread_join(c->txthread, NULL);
	pthread_mutex_lock(&c->txlock);
	c->tx_running = false;
	c->txlen = 0;
	pthread_mutex_unlock(&c->txlock);
}

/* ---- status ------------------------------------------------------------------------------------ */

static struct json_object *proto(const struct colo_cmp_proto_stats *p)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "compared", json_object_new_int64((int64_t)p->compared));
	json_object_object_add(o, "matched", json_object_new_int64((int64_t)p->matched));
	json_object_object_add(o, "mismatched", json_object_new_int64((int64_t)p->mismatched));
	return o;
}

static struct json_object *pct_us(double p50, double p99)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "p50_us", json_object_new_double(p50));
	json_object_object_add(o, "p99_us", json_object_new_double(p99));
	return o;
}

static struct json_object *ring_us(const struct remus_ring *g)
{
	return pct_us((double)remus_ring_pct(g, 0.5) / 1e3, (double)remus_ring_pct(g, 0.99) / 1e3);
}

static void primary_status(struct remus *r, struct colo *c, struct json_object *o)
{
	struct colo_cmp_stats st = {0};
	struct json_object *ck = json_object_new_object(), *fr, *p = json_object_new_object();

	if (c->cmp)
		colo_cmp_get_stats(c->cmp, &st);
	for (int i = 0; i < COLO_WHY_N; i++)
		json_object_object_add(ck, why_names[i], json_object_new_int64((int64_t)c->nr_ckpt[i]));
	json_object_object_add(o, "checkpoints", ck);
	fr = proto(&(struct colo_cmp_proto_stats){st.compared, st.matched, st.mismatched});
	json_object_object_add(fr, "tcp", proto(&st.tcp));
	json_object_object_add(fr, "udp", proto(&st.udp));
	json_object_object_add(fr, "icmp", proto(&st.icmp));
	json_object_object_add(fr, "arp", proto(&st.arp));
	json_object_object_add(fr, "other", proto(&st.other));
	json_object_object_add(o, "frames", fr);
	uint64_t now = now_ns();
	json_object_object_add(o, "divergence_age_ms",
			       json_object_new_double(st.divergence_since_ns && now > st.divergence_since_ns
							      ? (double)(now - st.divergence_since_ns) / 1e6
							      : 0));
	json_object_object_add(o, "flows", json_object_new_int64((int64_t)st.flows));
	json_object_object_add(o, "held_frames", json_object_new_int64((int64_t)st.held_frames));
	json_object_object_add(o, "svm_queued_frames", json_object_new_int64((int64_t)st.svm_frames));
	json_object_object_add(o, "released", json_object_new_int64((int64_t)st.released));
	json_object_object_add(o, "svm_frames", json_object_new_int64((int64_t)c->svm_frames));
	pthread_mutex_lock(&r->lock);
	json_object_object_add(o, "forwarded", json_object_new_int64((int64_t)c->fwd_frames));
	json_object_object_add(o, "forward_dropped", json_object_new_int64((int64_t)c->fwd_dropped));
	pthread_mutex_unlock(&r->lock);
	json_object_object_add(o, "checkpoint_interval_ms", json_object_new_int((int)c->interval_ms));
	json_object_object_add(o, "compare_timeout_ms",
			       json_object_new_int((int)(c->timeout_ms ? c->timeout_ms : 100)));
	json_object_object_add(o, "in_checkpoint", json_object_new_boolean(c->cs != CS_IDLE));
	json_object_object_add(o, "svm_dirty_pages_last", json_object_new_int64((int64_t)c->svm_dirty_last));
	/* pause: the PVM's pause per checkpoint (the engine's pause until the SVM's ack);
	 * checkpoint_time: request to ack */
	struct json_object *t = json_object_new_object();
	json_object_object_add(p, "p50_ms",
			       json_object_new_double((double)remus_ring_pct(&r->colo_pause_ns, 0.5) / 1e6));
	json_object_object_add(p, "p99_ms",
			       json_object_new_double((double)remus_ring_pct(&r->colo_pause_ns, 0.99) / 1e6));
	json_object_object_add(o, "pause", p);
	json_object_object_add(t, "p50_ms",
			       json_object_new_double((double)remus_ring_pct(&r->ack_ns, 0.5) / 1e6));
	json_object_object_add(t, "p99_ms",
			       json_object_new_double((double)remus_ring_pct(&r->ack_ns, 0.99) / 1e6));
	json_object_object_add(o, "checkpoint_time", t);
	/* the profile (additive): where a request's and a checkpoint's time goes */
	struct json_object *lat = json_object_new_object(), *ph = json_object_new_object();
	pthread_mutex_lock(&r->lock);
	json_object_object_add(lat, "forward_queue", ring_us(&r->colo_fwdq_ns));
	json_object_object_add(o, "forwarded_direct", json_object_new_int64((int64_t)c->fwd_direct));
	pthread_mutex_unlock(&r->lock);
	json_object_object_add(lat, "svm_round_trip", ring_us(&r->colo_rtt_ns));
	json_object_object_add(lat, "pvm_hold",
			       pct_us((double)st.hold_p50_ns / 1e3, (double)st.hold_p99_ns / 1e3));
	json_object_object_add(o, "latency", lat);
	json_object_object_add(ph, "request_to_dirty", ring_us(&r->colo_req_dirty_ns));
	json_object_object_add(ph, "pause", ring_us(&r->colo_pause_ns));
	pthread_mutex_lock(&r->lock);
	json_object_object_add(ph, "send", ring_us(&r->colo_send_ns));
	pthread_mutex_unlock(&r->lock);
	json_object_object_add(ph, "ack_wait", ring_us(&r->colo_ack_wait_ns));
	json_object_object_add(ph, "held", ring_us(&r->colo_hold_ns));
	json_object_object_add(o, "checkpoint_phases", ph);
	json_object_object_add(o, "stash_dropped",
			       json_object_new_int64((int64_t)(c->txstash.dropped + c->rxstash.dropped)));
}

void colo_status(struct remus *r, struct json_object *o)
{
	struct colo *c = r->colo;
	struct json_object *x;

	if (!c || (!r->colo_on && !r->colo_mode))
		return;
	x = json_object_new_object();
	if (r->colo_on) {
		primary_status(r, c, x);
	} else {
		pthread_mutex_lock(&c->txlock);
		json_object_object_add(x, "output_frames", json_object_new_int64((int64_t)c->out_frames));
		json_object_object_add(x, "output_dropped", json_object_new_int64((int64_t)c->out_dropped));
		json_object_object_add(x, "output_direct", json_object_new_int64((int64_t)c->out_direct));
		pthread_mutex_unlock(&c->txlock);
		json_object_object_add(x, "injected", json_object_new_int64((int64_t)c->injected));
		json_object_object_add(x, "inject_dropped",
				       json_object_new_int64((int64_t)c->inject_dropped));
		json_object_object_add(x, "applies", json_object_new_int64((int64_t)c->applies));
		json_object_object_add(x, "apply_ms_last",
				       json_object_new_double((double)c->apply_ns_last / 1e6));
		json_object_object_add(x, "running", json_object_new_boolean(c->svm_running));
	}
	json_object_object_add(o, "colo", x);
}
