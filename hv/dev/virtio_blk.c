/* virtio_blk.c — virtio-blk device core: config space, request validation, completion through the DMA gate, state. */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "hv/dev/state.h"
#include "hv/dev/virtio_blk_priv.h"

#define POOL_SIZE (2 * VBLK_QUEUE_SIZE)
#define CFG_LEN 60 /* struct virtio_blk_config up to write_zeroes_may_unmap + padding */

static uint64_t features(bool ro)
{
	uint64_t f = (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_F_INDIRECT_DESC) |
		     (1ull << VIRTIO_BLK_F_SIZE_MAX) | (1ull << VIRTIO_BLK_F_SEG_MAX) |
		     (1ull << VIRTIO_BLK_F_BLK_SIZE) | (1ull << VIRTIO_BLK_F_FLUSH) |
		     (1ull << VIRTIO_BLK_F_DISCARD) | (1ull << VIRTIO_BLK_F_WRITE_ZEROES);
	return ro ? f | (1ull << VIRTIO_BLK_F_RO) : f;
}

/* ---- request pool (t) ---- */

static struct blk_req *req_get(struct virtio_blk *d)
{
	struct blk_req *r = d->free;

	if (r)
		d->free = r->next;
	return r;
}

static void req_put(struct virtio_blk *d, struct blk_req *r)
{
	r->next = d->free;
	d->free = r;
}

/* ---- completion (t held; the caller is a vCPU thread or holds the DMA gate) ---- */

static void complete_locked(struct virtio_blk *d, struct blk_req *r, const void *bounce)
{
	struct vq *vq = &d->t.vq[0];
	uint32_t used = 0;

	if (r->e.in_bytes >= 1) {
		uint64_t st_off = r->e.in_bytes - 1;

		if (r->status == VIRTIO_BLK_S_OK && r->type == VIRTIO_BLK_T_IN && (bounce || r->direct)) {
			if (!r->direct)
				vq_elem_write(d->gm, &r->e, 0, bounce, r->data_len);
			used += (uint32_t)r->data_len;
		} else if (r->status == VIRTIO_BLK_S_OK && r->type == VIRTIO_BLK_T_GET_ID) {
			size_t n = st_off < VIRTIO_BLK_ID_BYTES ? st_off : VIRTIO_BLK_ID_BYTES;

			vq_elem_write(d->gm, &r->e, 0, d->id, n);
			used += (uint32_t)n;
		}
		vq_elem_write(d->gm, &r->e, st_off, &r->status, 1);
		used += 1;
	}
	if (r->status == VIRTIO_BLK_S_IOERR)
		d->st.ioerr++;
	else if (r->status == VIRTIO_BLK_S_UNSUPP)
		d->st.unsupp++;
	if (r->e.head < VBLK_QUEUE_SIZE && d->busy[r->e.head]) {
		d->busy[r->e.head] = false;
		d->inflight--;
	}
	if (virtio_mmio_queue_live(&d->t, 0)) {
		vq_push(vq, d->gm, r->e.head, used);
		virtio_mmio_used(&d->t, vq);
	}
	req_put(d, r);
}

/* ---- validation (t held) ---- */

static bool in_range(const struct virtio_blk *d, uint64_t sector, uint64_t nsec)
{
	uint64_t cap = d->capacity / VBLK_SECTOR;

	return sector <= cap && nsec <= cap - sector;
}

static int parse_segs(struct virtio_blk *d, struct blk_req *r)
{
	uint64_t bytes = r->e.out_bytes - VBLK_HDR_LEN;
	uint8_t raw[VBLK_DISCARD_SEG_LEN];

	if (r->e.in_bytes != 1 || bytes == 0 || bytes % VBLK_DISCARD_SEG_LEN ||
	    bytes / VBLK_DISCARD_SEG_LEN > VBLK_MAX_DISCARD_SEG)
		return VIRTIO_BLK_S_IOERR;
	r->nr_segs = (unsigned)(bytes / VBLK_DISCARD_SEG_LEN);
	for (unsigned i = 0; i < r->nr_segs; i++) {
		struct blk_seg *s = &r->segs[i];

		vq_elem_read(&r->e, VBLK_HDR_LEN + (size_t)i * VBLK_DISCARD_SEG_LEN, raw, sizeof(raw));
		memcpy(&s->sector, raw, 8);
		memcpy(&s->num, raw + 8, 4);
		memcpy(&s->flags, raw + 12, 4);
		s->sector = le64toh(s->sector);
		s->num = le32toh(s->num);
		s->flags = le32toh(s->flags);
		if (s->flags & ~1u || (r->type == VIRTIO_BLK_T_DISCARD && s->flags))
			return VIRTIO_BLK_S_UNSUPP;
		if (s->num > VBLK_MAX_DISCARD_SECTORS || !in_range(d, s->sector, s->num))
			return VIRTIO_BLK_S_IOERR;
	}
	return VIRTIO_BLK_S_OK;
}

/* Decide what a popped chain is. Returns true when it needs host I/O (a worker), false when its
 * status is known now (malformed, read-only, GET_ID, unsupported). */
static bool parse(struct virtio_blk *d, struct blk_req *r)
{
	uint8_t hdr[VBLK_HDR_LEN];
	uint64_t data;

	r->status = VIRTIO_BLK_S_IOERR;
	r->direct = false;
	r->data_len = 0;
	r->nr_segs = 0;
	r->type = ~0u;
	if (r->e.in_bytes < 1 || r->e.out_bytes < VBLK_HDR_LEN) {
		d->st.bad_requests++;
		return false; /* no status byte: pushed with len 0; short header: IOERR */
	}
	vq_elem_read(&r->e, 0, hdr, sizeof(hdr));
	memcpy(&r->type, hdr, 4);
	memcpy(&r->sector, hdr + 8, 8);
	r->type = le32toh(r->type);
	r->sector = le64toh(r->sector);
	switch (r->type) {
	case VIRTIO_BLK_T_IN:
		data = r->e.in_bytes - 1;
		if (r->e.out_bytes != VBLK_HDR_LEN || data % VBLK_SECTOR || data > VBLK_MAX_DATA ||
		    !in_range(d, r->sector, data / VBLK_SECTOR))
			break;
		r->data_len = data;
		d->st.reads++;
		return true;
	case VIRTIO_BLK_T_OUT:
		data = r->e.out_bytes - VBLK_HDR_LEN;
		if (r->e.in_bytes != 1 || data % VBLK_SECTOR || data > VBLK_MAX_DATA ||
		    !in_range(d, r->sector, data / VBLK_SECTOR) || d->readonly)
			break;
		r->data_len = data;
		d->st.writes++;
		return true;
	case VIRTIO_BLK_T_FLUSH:
		d->st.flushes++;
		if (d->readonly) {
			r->status = VIRTIO_BLK_S_OK;
			return false;
		}
		return true;
	case VIRTIO_BLK_T_GET_ID:
		d->st.get_ids++;
		if (r->e.out_bytes == VBLK_HDR_LEN)
			r->status = VIRTIO_BLK_S_OK;
		return false;
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES:
		if (r->type == VIRTIO_BLK_T_DISCARD)
			d->st.discards++;
		else
			d->st.write_zeroes++;
		if (d->readonly)
			break;
		r->status = (uint8_t)parse_segs(d, r);
		if (r->status != VIRTIO_BLK_S_OK)
			return false;
		return true;
	default:
		r->status = VIRTIO_BLK_S_UNSUPP;
		return false;
	}
	d->st.bad_requests++;
	return false;
}

/* Start a request just popped (or re-walked): run it now or hand it to a worker. */
static void start(struct virtio_blk *d, struct blk_req *r)
{
	r->gen = d->gen;
	if (parse(d, r))
		blk_submit(d, r);
	else
		complete_locked(d, r, NULL);
}

/* Pop every available chain. (t) held. */
static void process_queue(struct virtio_blk *d)
{
	struct vq *vq = &d->t.vq[0];

	while (virtio_mmio_queue_live(&d->t, 0)) {
		struct blk_req *r = req_get(d);
		int rc;

		if (!r) {
			d->want_pop = true;
			break;
		}
		rc = vq_pop(vq, d->gm, &r->e);
		if (rc <= 0) {
			req_put(d, r);
			if (rc < 0)
				virtio_mmio_set_broken(&d->t, vq->err);
			break;
		}
		if (r->e.head >= VBLK_QUEUE_SIZE || d->busy[r->e.head]) {
			req_put(d, r);
			virtio_mmio_set_broken(&d->t, "request head reused while in flight");
			break;
		}
		d->busy[r->e.head] = true;
		d->inflight++;
		start(d, r);
	}
	blk_submit_flush(d);
}

void blk_complete(struct virtio_blk *d, struct blk_req **rs, unsigned n, const uint8_t *bounce, size_t stride)
{
	bool open = d->gate_begin ? d->gate_begin(d->gate_opaque) : true;

	blk_complete_in(d, rs, n, bounce, stride, open);
	if (open && d->gate_end)
		d->gate_end(d->gate_opaque);
}

/* Open gate, (t) held: offer a successful write-type request to the write log. True: hold it. */
static bool wlog_refuses(struct virtio_blk *d, struct blk_req *r)
{
	struct virtio_blk_wreq w;
	struct iovec iov[VQ_MAX_IOV];

	if (!d->wlog || r->status != VIRTIO_BLK_S_OK ||
	    (r->type != VIRTIO_BLK_T_OUT && r->type != VIRTIO_BLK_T_WRITE_ZEROES &&
	     r->type != VIRTIO_BLK_T_DISCARD))
		return false;
	w.type = r->type;
	w.sector = r->sector;
	w.nr_sectors = r->type == VIRTIO_BLK_T_OUT ? r->data_len / VBLK_SECTOR : 0;
	w.niov = r->type == VIRTIO_BLK_T_OUT ? blk_data_iov(r, iov) : 0;
	w.iov = iov;
	w.nr_ranges = r->nr_segs;
	for (unsigned i = 0; i < r->nr_segs; i++) {
		w.range[i].sector = r->segs[i].sector;
		w.range[i].nr_sectors = r->segs[i].num;
	}
	if (!d->wlog(d->wlog_opaque, &w))
		return false;
	d->st.wlog_held++;
	return true;
}

static void hold(struct virtio_blk *d, struct blk_req *r)
{
	r->next = NULL; /* re-run on kick */
	if (d->held_tail)
		d->held_tail->next = r;
	else
		d->held = r;
	d->held_tail = r;
}

void blk_complete_in(struct virtio_blk *d, struct blk_req **rs, unsigned n, const uint8_t *bounce,
		     size_t stride, bool open)
{
	pthread_mutex_lock(&d->t.lock);
	for (unsigned i = 0; i < n; i++) {
		struct blk_req *r = rs[i];

		if (r->gen != d->gen) {
			req_put(d, r); /* the device was reset (or restored) meanwhile */
		} else if (r->ov_full) {
			r->ov_full = false;
			hold(d, r); /* the overlay is full: a checkpoint empties it, then a kick */
			d->st.ov_held++;
		} else if (open && wlog_refuses(d, r)) {
			hold(d, r); /* the log is full: an early epoch is on its way, then a kick */
		} else if (!open) {
			hold(d, r); /* the VM is paused: guest RAM is off limits */
			d->st.held++;
		} else {
			complete_locked(d, r, bounce ? bounce + i * stride : NULL);
		}
	}
	if (open && d->want_pop) {
		d->want_pop = false;
		process_queue(d);
	}
	pthread_mutex_unlock(&d->t.lock);
}

/* ---- transport callbacks (t held) ---- */

static void notify_cb(void *opaque, unsigned queue)
{
	if (queue == 0)
		process_queue(opaque);
}

static void cfg_read_cb(void *opaque, uint32_t off, void *data, uint32_t len)
{
	struct virtio_blk *d = opaque;
	uint8_t c[64] = {0};
	uint64_t cap = htole64(d->capacity / VBLK_SECTOR);
	uint32_t v;

	memcpy(c + 0, &cap, 8);
	v = htole32(VBLK_SIZE_MAX), memcpy(c + 8, &v, 4);
	v = htole32(VBLK_SEG_MAX), memcpy(c + 12, &v, 4);
	v = htole32(VBLK_SECTOR), memcpy(c + 20, &v, 4);
	c[32] = 1; /* writeback: the guest must flush */
	c[34] = 1; /* num_queues (le16) */
	v = htole32(VBLK_MAX_DISCARD_SECTORS), memcpy(c + 36, &v, 4);
	v = htole32(VBLK_MAX_DISCARD_SEG), memcpy(c + 40, &v, 4);
	v = htole32(1), memcpy(c + 44, &v, 4); /* discard_sector_alignment */
	v = htole32(VBLK_MAX_DISCARD_SECTORS), memcpy(c + 48, &v, 4);
	v = htole32(VBLK_MAX_DISCARD_SEG), memcpy(c + 52, &v, 4);
	c[56] = 1; /* write_zeroes_may_unmap */
	if (off < CFG_LEN && len <= CFG_LEN - off)
		memcpy(data, c + off, len);
}

static void cfg_write_cb(void *opaque, uint32_t off, const void *data, uint32_t len)
{
	(void)opaque, (void)off, (void)data, (void)len; /* writeback toggling not offered */
}

/* Forget every request (t held): a transport reset or a restore. Requests still running in a worker
 * finish their host I/O and are dropped by the generation check. */
static void forget_all(struct virtio_blk *d)
{
	d->gen++;
	blk_queue_purge(d);
	while (d->held) {
		struct blk_req *r = d->held;

		d->held = r->next;
		req_put(d, r);
	}
	d->held_tail = NULL;
	memset(d->busy, 0, sizeof(d->busy));
	d->inflight = 0;
	d->nr_redo = 0;
	d->want_pop = false;
}

static void reset_cb(void *opaque)
{
	forget_all(opaque);
}

static const struct virtio_dev_ops blk_vops = {
	.notify = notify_cb,
	.cfg_read = cfg_read_cb,
	.cfg_write = cfg_write_cb,
	.reset = reset_cb,
};

/* ---- lifecycle ---- */

int virtio_blk_create(struct guest_mem *gm, int fd, uint64_t capacity, bool readonly, const char *id,
		      unsigned workers, struct virtio_blk **out)
{
	struct virtio_blk *d;
	struct statfs sf;
	struct stat sb;
	int rc;

	*out = NULL;
	if (!gm || fd < 0)
		return -EINVAL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->pool = calloc(POOL_SIZE, sizeof(*d->pool));
	if (!d->pool) {
		free(d);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < POOL_SIZE; i++)
		req_put(d, &d->pool[i]);
	d->gm = gm;
	d->fd = fd;
	d->blkdev = !fstat(fd, &sb) && S_ISBLK(sb.st_mode);
	/* Memory-backed files never wait for a disk: read them straight into guest RAM (inside the gate);
	 * others only what the page cache holds (RWF_NOWAIT). */
	d->direct_mode = !fstatfs(fd, &sf) && (sf.f_type == TMPFS_MAGIC || sf.f_type == RAMFS_MAGIC)
				 ? DIRECT_ALWAYS
				 : DIRECT_NOWAIT;
	d->readonly = readonly;
	d->locked = true;
	d->capacity = capacity & ~(uint64_t)(VBLK_SECTOR - 1);
	if (id)
		memcpy(d->id, id, strnlen(id, sizeof(d->id))); /* NUL-padded, unterminated at 20 (spec) */
	rc = virtio_mmio_init(&d->t, gm, VIRTIO_ID_BLOCK, features(readonly), 1, VBLK_QUEUE_SIZE, &blk_vops,
			      d);
	if (rc) {
		free(d->pool);
		free(d);
		return rc;
	}
	pthread_mutex_init(&d->qlock, NULL);
	pthread_cond_init(&d->qcond, NULL);
	pthread_cond_init(&d->idle, NULL);
	rc = blk_workers_start(d, workers ? workers : VBLK_WORKERS);
	if (rc) {
		d->fd = -1; /* the caller keeps fd on failure */
		virtio_blk_destroy(d);
		return rc;
	}
	*out = d;
	return 0;
}

void virtio_blk_destroy(struct virtio_blk *d)
{
	if (!d)
		return;
	blk_workers_stop(d);
	blk_ov_destroy(d);
	pthread_cond_destroy(&d->qcond);
	pthread_cond_destroy(&d->idle);
	pthread_mutex_destroy(&d->qlock);
	virtio_mmio_destroy(&d->t);
	if (d->fd >= 0)
		close(d->fd);
	free(d->pool);
	free(d);
}

int virtio_blk_io(void *dev, uint64_t off, void *data, uint32_t len, bool is_write)
{
	return virtio_mmio_io(&((struct virtio_blk *)dev)->t, off, data, len, is_write);
}

void virtio_blk_set_irq(struct virtio_blk *d, virtio_irq_fn fn, void *opaque)
{
	virtio_mmio_set_irq(&d->t, fn, opaque);
}

void virtio_blk_set_gate(struct virtio_blk *d, virtio_blk_gate_begin_fn begin, virtio_blk_gate_end_fn end,
			 void *opaque)
{
	pthread_mutex_lock(&d->t.lock);
	d->gate_begin = begin;
	d->gate_end = end;
	d->gate_opaque = opaque;
	pthread_mutex_unlock(&d->t.lock);
}

void virtio_blk_set_wlog(struct virtio_blk *d, virtio_blk_wlog_fn fn, void *opaque)
{
	pthread_mutex_lock(&d->t.lock);
	d->wlog = fn;
	d->wlog_opaque = opaque;
	pthread_mutex_unlock(&d->t.lock);
}

void virtio_blk_clear_wlog(struct virtio_blk *d, void *opaque)
{
	pthread_mutex_lock(&d->t.lock);
	if (d->wlog_opaque == opaque) {
		d->wlog = NULL;
		d->wlog_opaque = NULL;
	}
	pthread_mutex_unlock(&d->t.lock);
}

int virtio_blk_backend_fd(struct virtio_blk *d)
{
	return d->fd;
}

bool virtio_blk_readonly(struct virtio_blk *d)
{
	return d->readonly;
}

const char *virtio_blk_id(struct virtio_blk *d, char *out)
{
	memcpy(out, d->id, VIRTIO_BLK_ID_BYTES);
	out[VIRTIO_BLK_ID_BYTES] = 0;
	return out;
}

void virtio_blk_kick(struct virtio_blk *d)
{
	bool open = d->gate_begin ? d->gate_begin(d->gate_opaque) : true;
	struct blk_req *held;

	if (!open)
		return; /* paused again already: the next resume kicks */
	pthread_mutex_lock(&d->t.lock);
	held = d->held;
	d->held = d->held_tail = NULL;
	while (held) {
		struct blk_req *r = held;

		held = r->next;
		blk_submit(d, r); /* parsed and counted already: run the host I/O again */
	}
	for (unsigned i = 0; i < d->nr_redo && virtio_mmio_queue_live(&d->t, 0); i++) {
		struct blk_req *r = req_get(d);

		if (!r)
			break; /* cannot happen: the pool is twice the queue */
		if (vq_chain(&d->t.vq[0], d->gm, d->redo[i], &r->e)) {
			req_put(d, r);
			virtio_mmio_set_broken(&d->t, d->t.vq[0].err);
			break;
		}
		start(d, r);
	}
	d->nr_redo = 0;
	process_queue(d);
	pthread_mutex_unlock(&d->t.lock);
	if (d->gate_end)
		d->gate_end(d->gate_opaque);
}

unsigned virtio_blk_inflight(struct virtio_blk *d)
{
	unsigned n;

	pthread_mutex_lock(&d->t.lock);
	n = d->inflight;
	pthread_mutex_unlock(&d->t.lock);
	return n;
}

void virtio_blk_get_stats(struct virtio_blk *d, struct virtio_blk_stats *st)
{
	pthread_mutex_lock(&d->t.lock);
	*st = d->st;
	pthread_mutex_unlock(&d->t.lock);
}

uint64_t virtio_blk_capacity(struct virtio_blk *d)
{
	return d->capacity;
}

uint32_t virtio_blk_status(struct virtio_blk *d)
{
	uint32_t s;

	pthread_mutex_lock(&d->t.lock);
	s = d->t.status;
	pthread_mutex_unlock(&d->t.lock);
	return s;
}

const char *virtio_blk_broken(struct virtio_blk *d)
{
	const char *b;

	pthread_mutex_lock(&d->t.lock);
	b = d->t.broken;
	pthread_mutex_unlock(&d->t.lock);
	return b;
}

struct virtio_mmio *virtio_blk_transport(struct virtio_blk *d)
{
	return &d->t;
}

/* ---- state ---- */

#define BLK_STATE_MAGIC 0x4b4c4256u /* "VBLK" */
#define BLK_STATE_VERSION 1
#define BLK_STATE_HDR 24 /* magic, version, capacity, readonly, nr_inflight */

size_t virtio_blk_state_size(struct virtio_blk *d)
{
	return virtio_mmio_state_size(&d->t) + BLK_STATE_HDR + 2 * VBLK_QUEUE_SIZE;
}

int virtio_blk_save(struct virtio_blk *d, void *buf, size_t len)
{
	size_t tlen = virtio_mmio_state_size(&d->t);
	struct st_enc e;
	int rc;

	if (!buf || len < virtio_blk_state_size(d))
		return -ENOSPC;
	rc = virtio_mmio_save(&d->t, buf, len);
	if (rc < 0)
		return rc;
	st_enc_init(&e, (uint8_t *)buf + tlen, len - tlen);
	pthread_mutex_lock(&d->t.lock);
	st_put32(&e, BLK_STATE_MAGIC);
	st_put32(&e, BLK_STATE_VERSION);
	st_put64(&e, d->capacity);
	st_put32(&e, d->readonly);
	st_put32(&e, d->inflight);
	for (unsigned h = 0; h < VBLK_QUEUE_SIZE; h++)
		if (d->busy[h])
			st_put16(&e, (uint16_t)h);
	pthread_mutex_unlock(&d->t.lock);
	st_pad_to(&e, BLK_STATE_HDR + 2 * VBLK_QUEUE_SIZE);
	rc = st_enc_done(&e);
	return rc < 0 ? rc : (int)tlen + rc;
}

int virtio_blk_restore(struct virtio_blk *d, const void *buf, size_t len)
{
	size_t tlen = virtio_mmio_state_size(&d->t);
	uint16_t heads[VBLK_QUEUE_SIZE];
	bool seen[VBLK_QUEUE_SIZE] = {0};
	uint32_t n, ro;
	uint64_t cap;
	struct st_dec c;
	int rc;

	if (!buf || len != virtio_blk_state_size(d))
		return -EINVAL;
	st_dec_init(&c, (const uint8_t *)buf + tlen, len - tlen);
	if (st_get32(&c) != BLK_STATE_MAGIC || st_get32(&c) != BLK_STATE_VERSION)
		return -EINVAL;
	cap = st_get64(&c);
	ro = st_get32(&c);
	n = st_get32(&c);
	if (cap != d->capacity || ro != d->readonly || n > VBLK_QUEUE_SIZE)
		return -EINVAL;
	for (uint32_t i = 0; i < n; i++) {
		heads[i] = st_get16(&c);
		if (heads[i] >= VBLK_QUEUE_SIZE || seen[heads[i]])
			return -EINVAL;
		seen[heads[i]] = true;
	}
	st_skip_to(&c, BLK_STATE_HDR + 2 * VBLK_QUEUE_SIZE);
	if (st_dec_done(&c, true))
		return -EINVAL;
	virtio_blk_drain(d); /* host I/O still running for the old state finishes first */
	rc = virtio_mmio_restore(&d->t, buf, tlen);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&d->t.lock);
	forget_all(d);
	for (uint32_t i = 0; i < n; i++) {
		if (heads[i] >= d->t.vq[0].num) {
			virtio_mmio_set_broken(&d->t, "restored request head beyond the queue size");
			break;
		}
		d->busy[heads[i]] = true;
		d->redo[d->nr_redo++] = heads[i];
		d->inflight++;
	}
	pthread_mutex_unlock(&d->t.lock);
	return 0;
}
