/* virtio_blk_io.c — virtio-blk host I/O: the worker pool, read/write/flush/discard/write-zeroes on the backing fd. */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/errf.h"
#include "hv/dev/virtio_blk_priv.h"

/* ---- the job queue ---- */

#define WORKER_BATCH 4 /* requests a worker takes at once: fewer wake-ups and lock round trips */

void blk_submit(struct virtio_blk *d, struct blk_req *r)
{
	r->next = NULL;
	if (d->sub_tail)
		d->sub_tail->next = r;
	else
		d->sub_head = r;
	d->sub_tail = r;
	d->sub_n++;
}

void blk_submit_flush(struct virtio_blk *d)
{
	unsigned wake;

	if (!d->sub_n)
		return;
	wake = (d->sub_n + WORKER_BATCH - 1) / WORKER_BATCH;
	pthread_mutex_lock(&d->qlock);
	if (d->q_tail)
		d->q_tail->next = d->sub_head;
	else
		d->q_head = d->sub_head;
	d->q_tail = d->sub_tail;
	d->pending += d->sub_n;
	for (unsigned i = 0; i < wake && i < d->nr_th; i++)
		pthread_cond_signal(&d->qcond);
	pthread_mutex_unlock(&d->qlock);
	d->sub_head = d->sub_tail = NULL;
	d->sub_n = 0;
}

void blk_queue_purge(struct virtio_blk *d)
{
	struct blk_req **pp, *keep_tail = NULL;

	pthread_mutex_lock(&d->qlock);
	for (pp = &d->q_head; *pp;) {
		struct blk_req *r = *pp;

		if (r->gen != d->gen) {
			*pp = r->next;
			r->next = d->free;
			d->free = r;
			d->pending--;
		} else {
			keep_tail = r;
			pp = &r->next;
		}
	}
	d->q_tail = keep_tail;
	if (!d->pending)
		pthread_cond_broadcast(&d->idle);
	pthread_mutex_unlock(&d->qlock);
}

void virtio_blk_drain(struct virtio_blk *d)
{
	pthread_mutex_lock(&d->qlock);
	while (d->pending)
		pthread_cond_wait(&d->idle, &d->qlock);
	pthread_mutex_unlock(&d->qlock);
}

/* ---- host I/O ---- */

static int do_read(struct virtio_blk *d, struct blk_req *r, uint8_t *bounce)
{
	uint64_t done = 0;

	while (done < r->data_len) {
		ssize_t n = pread(d->fd, bounce + done, r->data_len - done,
				  (off_t)(r->sector * VBLK_SECTOR + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1; /* error, or the file shrank under us */
		done += (uint64_t)n;
	}
	return 0;
}

/* Inside an open gate: read straight into the chain's writable buffers, but only what the page cache
 * holds (RWF_NOWAIT), so the bracket never waits for a disk. True when all of it was read (the bytes are
 * marked device-dirty); false: the caller reads through the bounce buffer outside the bracket. */
static bool read_direct(struct virtio_blk *d, struct blk_req *r)
{
	struct iovec iov[VQ_MAX_IOV];
	uint64_t left = r->data_len;
	unsigned n = 0;
	ssize_t got;
	int mode;

	for (unsigned k = r->e.n_out; k < r->e.n_out + r->e.n_in && left; k++) {
		const struct vq_iov *v = &r->e.iov[k];
		size_t len = v->len < left ? v->len : left;

		iov[n].iov_base = v->base;
		iov[n].iov_len = len;
		left -= len;
		n++;
	}
	mode = __atomic_load_n(&d->direct_mode, __ATOMIC_RELAXED);
	if (!n || mode == DIRECT_NEVER)
		return false;
	got = preadv2(d->fd, iov, (int)n, (off_t)(r->sector * VBLK_SECTOR),
		      mode == DIRECT_ALWAYS ? 0 : RWF_NOWAIT);
	if (got < 0 && errno == EOPNOTSUPP)
		__atomic_store_n(&d->direct_mode, DIRECT_NEVER, __ATOMIC_RELAXED); /* no RWF_NOWAIT here */
	if (got <= 0)
		return false;
	left = (uint64_t)got;
	for (unsigned k = r->e.n_out; k < r->e.n_out + r->e.n_in && left; k++) {
		const struct vq_iov *v = &r->e.iov[k];
		size_t len = v->len < left ? v->len : left;

		mem_mark_dirty(d->gm, v->gpa, len);
		left -= len;
	}
	if ((uint64_t)got != r->data_len)
		return false; /* partly cached: the bounce path re-reads (and rewrites) all of it */
	r->direct = true;
	r->status = VIRTIO_BLK_S_OK;
	return true;
}

/* Write the data part of the chain (the device-readable bytes after the header) straight from guest
 * RAM. The guest does not touch a buffer it has made available, and a paused VM does not run, so no
 * gate is needed to read it. */
unsigned blk_data_iov(const struct blk_req *r, struct iovec *iov)
{
	uint64_t skip = VBLK_HDR_LEN;
	unsigned n = 0;

	for (unsigned k = 0; k < r->e.n_out; k++) {
		const struct vq_iov *v = &r->e.iov[k];

		if (skip >= v->len) {
			skip -= v->len;
			continue;
		}
		iov[n].iov_base = (uint8_t *)v->base + skip;
		iov[n].iov_len = v->len - skip;
		skip = 0;
		n++;
	}
	return n;
}

static int write_iov(int fd, struct iovec *iov, unsigned n, uint64_t off)
{
	for (unsigned i = 0; i < n;) {
		ssize_t w = pwritev(fd, iov + i, (int)(n - i), (off_t)off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		off += (uint64_t)w;
		while (i < n && (size_t)w >= iov[i].iov_len) {
			w -= (ssize_t)iov[i].iov_len;
			i++;
		}
		if (i < n) {
			iov[i].iov_base = (uint8_t *)iov[i].iov_base + w;
			iov[i].iov_len -= (size_t)w;
		}
	}
	return 0;
}

static int do_write(struct virtio_blk *d, struct blk_req *r)
{
	struct iovec iov[VQ_MAX_IOV];
	unsigned n = blk_data_iov(r, iov);

	if (blk_ov_active(d)) {
		int rc = blk_ov_write(d, r, iov, n);
		r->ov_full = rc == 1;
		return rc < 0 ? -1 : 0;
	}
	return write_iov(d->fd, iov, n, r->sector * VBLK_SECTOR);
}

static int write_zeroes_slow(struct virtio_blk *d, uint64_t off, uint64_t len)
{
	static const uint8_t zero[64 << 10];

	while (len) {
		size_t n = len < sizeof(zero) ? len : sizeof(zero);
		ssize_t w = pwrite(d->fd, zero, n, (off_t)off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		off += (uint64_t)w;
		len -= (uint64_t)w;
	}
	return 0;
}

/* One DISCARD or WRITE_ZEROES range. Discard is a hint: a backend that cannot punch holes completes
 * it as OK. */
static int seg_io(struct virtio_blk *d, uint32_t type, bool unmap, uint64_t off, uint64_t len)
{
	uint64_t range[2] = {off, len};
	int rc;

	if (!len)
		return 0;
	if (blk_ov_active(d)) /* both read as zeroes from the overlay afterwards */
		return blk_ov_zero(d, off / VBLK_SECTOR, len / VBLK_SECTOR);
	if (type == VIRTIO_BLK_T_DISCARD) {
		rc = d->blkdev ? ioctl(d->fd, BLKDISCARD, range)
			       : fallocate(d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
					   (off_t)len);
		return rc && errno != EOPNOTSUPP && errno != ENOTTY && errno != EINVAL ? -1 : 0;
	}
	if (d->blkdev)
		rc = ioctl(d->fd, BLKZEROOUT, range);
	else if (unmap)
		rc = fallocate(d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len);
	else
		rc = fallocate(d->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len);
	if (rc && (errno == EOPNOTSUPP || errno == ENOTTY || errno == EINVAL))
		rc = write_zeroes_slow(d, off, len);
	return rc ? -1 : 0;
}

static int do_segs(struct virtio_blk *d, struct blk_req *r)
{
	for (unsigned i = 0; i < r->nr_segs; i++)
		if (seg_io(d, r->type, r->segs[i].flags & 1, r->segs[i].sector * VBLK_SECTOR,
			   (uint64_t)r->segs[i].num * VBLK_SECTOR))
			return -1;
	return 0;
}

/* ---- host I/O for replication ---- */

int virtio_blk_host_apply(struct virtio_blk *d, uint32_t type, uint64_t sector, uint64_t nr_sectors,
			  const void *data)
{
	uint64_t cap = d->capacity / VBLK_SECTOR;
	struct iovec iov;

	if (sector > cap || nr_sectors > cap - sector)
		return -EINVAL;
	if (d->readonly)
		return -EROFS;
	if (!virtio_blk_locked(d))
		return -ENOLCK; /* the image is another process's (shared storage, before the switchover) */
	switch (type) {
	case VIRTIO_BLK_T_OUT:
		if (!data)
			return -EINVAL;
		iov = (struct iovec){.iov_base = (void *)data, .iov_len = nr_sectors * VBLK_SECTOR};
		return write_iov(d->fd, &iov, 1, sector * VBLK_SECTOR) ? -EIO : 0;
	case VIRTIO_BLK_T_WRITE_ZEROES:
	case VIRTIO_BLK_T_DISCARD:
		return seg_io(d, type, type == VIRTIO_BLK_T_WRITE_ZEROES, sector * VBLK_SECTOR,
			      nr_sectors * VBLK_SECTOR)
			       ? -EIO
			       : 0;
	default:
		return -EINVAL;
	}
}

int virtio_blk_host_read(struct virtio_blk *d, uint64_t off, void *buf, size_t len)
{
	size_t done = 0;

	if (off > d->capacity || len > d->capacity - off)
		return -EINVAL;
	while (done < len) {
		ssize_t n = pread(d->fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (size_t)n;
	}
	return 0;
}

int virtio_blk_host_flush(struct virtio_blk *d)
{
	return d->readonly || !fdatasync(d->fd) ? 0 : -errno;
}

static void execute(struct virtio_blk *d, struct blk_req *r, uint8_t *bounce)
{
	int rc;

	switch (r->type) {
	case VIRTIO_BLK_T_IN:
		rc = blk_ov_active(d) ? blk_ov_read(d, r, bounce) : do_read(d, r, bounce);
		break;
	case VIRTIO_BLK_T_OUT:
		rc = do_write(d, r);
		break;
	case VIRTIO_BLK_T_FLUSH: /* an overlay is thrown away or written back and synced */
		rc = blk_ov_active(d) ? 0 : fdatasync(d->fd);
		break;
	default:
		rc = do_segs(d, r);
		break;
	}
	r->status = rc ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK;
}

struct worker_arg {
	struct virtio_blk *d;
};

/* Cached reads go straight into guest RAM inside one gate bracket and complete at once; everything
 * else does its host I/O outside any bracket and completes through a second one. */
static void run_batch(struct virtio_blk *d, struct blk_req **r, unsigned n, uint8_t *bounce)
{
	struct blk_req *done[WORKER_BATCH], *rest[WORKER_BATCH];
	unsigned nd = 0, nr = 0;
	bool open = d->gate_begin ? d->gate_begin(d->gate_opaque) : true;

	for (unsigned i = 0; i < n; i++) {
		if (open && r[i]->type == VIRTIO_BLK_T_IN && !blk_ov_active(d) && read_direct(d, r[i]))
			done[nd++] = r[i];
		else
			rest[nr++] = r[i];
	}
	if (open) {
		blk_complete_in(d, done, nd, NULL, 0, true);
		if (d->gate_end)
			d->gate_end(d->gate_opaque);
	}
	if (!nr)
		return;
	for (unsigned i = 0; i < nr; i++) {
		if (!bounce && rest[i]->type == VIRTIO_BLK_T_IN)
			rest[i]->status = VIRTIO_BLK_S_IOERR;
		else
			execute(d, rest[i], bounce ? bounce + i * VBLK_MAX_DATA : NULL);
	}
	blk_complete(d, rest, nr, bounce, VBLK_MAX_DATA);
}

static void *worker(void *opaque)
{
	struct virtio_blk *d = opaque;
	/* IN data lands here (request i of a batch at i * VBLK_MAX_DATA; pages are touched only as used),
	 * and goes into guest RAM only through the gate */
	uint8_t *bounce = malloc(WORKER_BATCH * VBLK_MAX_DATA);

	for (;;) {
		struct blk_req *r[WORKER_BATCH];
		unsigned n = 0;

		pthread_mutex_lock(&d->qlock);
		while (!d->stop && !d->q_head)
			pthread_cond_wait(&d->qcond, &d->qlock);
		if (d->stop) {
			pthread_mutex_unlock(&d->qlock);
			break;
		}
		while (n < WORKER_BATCH && d->q_head) {
			r[n++] = d->q_head;
			d->q_head = d->q_head->next;
		}
		if (!d->q_head)
			d->q_tail = NULL;
		pthread_mutex_unlock(&d->qlock);

		run_batch(d, r, n, bounce);

		pthread_mutex_lock(&d->qlock);
		d->pending -= n;
		if (d->pending == 0)
			pthread_cond_broadcast(&d->idle);
		pthread_mutex_unlock(&d->qlock);
	}
	free(bounce);
	return NULL;
}

int blk_workers_start(struct virtio_blk *d, unsigned n)
{
	if (n > VBLK_WORKERS)
		n = VBLK_WORKERS;
	for (d->nr_th = 0; d->nr_th < n; d->nr_th++)
		if (pthread_create(&d->th[d->nr_th], NULL, worker, d))
			return -EAGAIN;
	return 0;
}

void blk_workers_stop(struct virtio_blk *d)
{
	pthread_mutex_lock(&d->qlock);
	d->stop = true;
	pthread_cond_broadcast(&d->qcond);
	pthread_mutex_unlock(&d->qlock);
	for (unsigned i = 0; i < d->nr_th; i++)
		pthread_join(d->th[i], NULL);
	d->nr_th = 0;
}

/* ---- backend ---- */

int virtio_blk_open_image(const char *path, bool readonly, bool lock_later, uint64_t *capacity, bool *locked,
			  char *err, size_t errlen)
{
	struct stat sb;
	int fd, rc;

	*locked = true;
	fd = open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (fd < 0)
		return errf(err, errlen, -errno, "disk %s: %s", path, strerror(errno));
	if (fstat(fd, &sb)) {
		rc = errf(err, errlen, -errno, "disk %s: %s", path, strerror(errno));
		goto err;
	}
	if (S_ISBLK(sb.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, capacity)) {
			rc = errf(err, errlen, -errno, "disk %s: cannot size: %s", path, strerror(errno));
			goto err;
		}
	} else if (S_ISREG(sb.st_mode)) {
		*capacity = (uint64_t)sb.st_size;
	} else {
		rc = errf(err, errlen, -EINVAL, "disk %s: not a regular file or block device", path);
		goto err;
	}
	if (*capacity < VBLK_SECTOR) {
		rc = errf(err, errlen, -EINVAL, "disk %s: smaller than one 512-byte sector", path);
		goto err;
	}
	if (flock(fd, (readonly ? LOCK_SH : LOCK_EX) | LOCK_NB)) {
		if (errno == EWOULDBLOCK && lock_later) {
			*locked = false;
			return fd;
		}
		rc = errf(err, errlen, errno == EWOULDBLOCK ? -EBUSY : -errno, "disk %s: %s", path,
			  errno == EWOULDBLOCK ? "in use by another process (locked)" : strerror(errno));
		goto err;
	}
	return fd;
err:
	close(fd);
	return rc;
}

int virtio_blk_open_backend(const char *path, bool readonly, uint64_t *capacity, char *err, size_t errlen)
{
	bool locked;

	return virtio_blk_open_image(path, readonly, false, capacity, &locked, err, errlen);
}

/* ---- the image lock ---- */

bool virtio_blk_locked(struct virtio_blk *d)
{
	return __atomic_load_n(&d->locked, __ATOMIC_ACQUIRE);
}

void virtio_blk_set_locked(struct virtio_blk *d, bool locked)
{
	__atomic_store_n(&d->locked, locked, __ATOMIC_RELEASE);
}

int virtio_blk_lock(struct virtio_blk *d, int wait_ms)
{
	for (int i = 0;; i++) {
		if (!flock(d->fd, (d->readonly ? LOCK_SH : LOCK_EX) | LOCK_NB)) {
			virtio_blk_set_locked(d, true);
			return 0;
		}
		if (errno != EWOULDBLOCK && errno != EINTR)
			return -errno;
		if (i >= wait_ms)
			return -EBUSY;
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
}

int virtio_blk_unlock(struct virtio_blk *d)
{
	if (flock(d->fd, LOCK_UN))
		return -errno;
	virtio_blk_set_locked(d, false);
	return 0;
}
