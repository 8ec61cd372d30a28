/* virtio_blk_overlay.c — a COLO secondary's disk overlay: its writes go to a sparse memfd over the image. */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hv/dev/virtio_blk_priv.h"

/*
 * While an overlay is active every write-type request of the device goes to a memfd of the image's
 * size (sparse: only written pages use memory) and sets one bit per 512-byte sector in a map; reads
 * take each run of sectors from the overlay where the map has it, else from the image; FLUSH is a
 * no-op (the overlay is thrown away or written back, see below). The image itself is written only
 * by virtio_blk_host_apply (the primary's committed writes) and virtio_blk_overlay_commit.
 *
 * Concurrency: start, reset and commit run with the device quiesced (the VM paused, the workers
 * drained here); workers read `d->ov` without a lock (it changes only while they are idle), update the
 * map with atomic ORs and the data count atomically.
 */

struct blk_overlay {
	int fd;
	uint64_t *map; /* one bit per sector */
	uint64_t nsec; /* sectors of the image */
	uint64_t bytes; /* atomic: OUT data in the overlay (discards / zeroes cost nothing) */
	uint64_t max_bytes;
};

static bool map_test(const struct blk_overlay *o, uint64_t s)
{
	return __atomic_load_n(&o->map[s / 64], __ATOMIC_RELAXED) & (1ull << (s % 64));
}

/* Set the bits of [s, s + n); returns how many were clear. */
static uint64_t map_set(struct blk_overlay *o, uint64_t s, uint64_t n)
{
	uint64_t fresh = 0;

	for (uint64_t i = s; i < s + n; i++) {
		uint64_t bit = 1ull << (i % 64);
		if (!(__atomic_fetch_or(&o->map[i / 64], bit, __ATOMIC_RELAXED) & bit))
			fresh++;
	}
	return fresh;
}

static uint64_t map_clear_count(const struct blk_overlay *o, uint64_t s, uint64_t n)
{
	uint64_t clear = 0;

	for (uint64_t i = s; i < s + n; i++)
		clear += !map_test(o, i);
	return clear;
}

/* The whole of [off, off + len) read (wr false) or written, across short transfers and EINTR. */
static int pio_full(int fd, uint8_t *p, size_t len, uint64_t off, bool wr)
{
	while (len) {
		ssize_t n = wr ? pwrite(fd, p, len, (off_t)off) : pread(fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static int pread_full(int fd, uint8_t *p, size_t len, uint64_t off)
{
	return pio_full(fd, p, len, off, false);
}

static int pwrite_full(int fd, const uint8_t *p, size_t len, uint64_t off)
{
	return pio_full(fd, (uint8_t *)p, len, off, true); /* pwrite only reads p */
}

bool blk_ov_active(struct virtio_blk *d)
{
	return d->ov != NULL;
}

int blk_ov_read(struct virtio_blk *d, struct blk_req *r, uint8_t *bounce)
{
	struct blk_overlay *o = d->ov;
	uint64_t s = r->sector, end = r->sector + r->data_len / VBLK_SECTOR;

	while (s < end) {
		bool in = map_test(o, s);
		uint64_t e = s + 1;
		while (e < end && map_test(o, e) == in)
			e++;
		if (pread_full(in ? o->fd : d->fd, bounce + (s - r->sector) * VBLK_SECTOR,
			       (e - s) * VBLK_SECTOR, s * VBLK_SECTOR))
			return -1;
		s = e;
	}
	return 0;
}

int blk_ov_write(struct virtio_blk *d, struct blk_req *r, struct iovec *iov, unsigned n)
{
	struct blk_overlay *o = d->ov;
	uint64_t nsec = r->data_len / VBLK_SECTOR, off = r->sector * VBLK_SECTOR;
	uint64_t add = map_clear_count(o, r->sector, nsec) * VBLK_SECTOR;

	if (add && __atomic_load_n(&o->bytes, __ATOMIC_RELAXED) + add > o->max_bytes)
		return 1; /* full: held until the next checkpoint empties it */
	for (unsigned i = 0; i < n; i++) {
		if (pwrite_full(o->fd, iov[i].iov_base, iov[i].iov_len, off))
			return -1;
		off += iov[i].iov_len;
	}
	__atomic_add_fetch(&o->bytes, map_set(o, r->sector, nsec) * VBLK_SECTOR, __ATOMIC_RELAXED);
	return 0;
}

int blk_ov_zero(struct virtio_blk *d, uint64_t sector, uint64_t nsec)
{
	struct blk_overlay *o = d->ov;

	if (fallocate(o->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(sector * VBLK_SECTOR),
		      (off_t)(nsec * VBLK_SECTOR)))
		return -1;
	(void)map_set(o, sector, nsec); /* reads as zeroes from the overlay's hole */
	return 0;
}

static void ov_free(struct blk_overlay *o)
{
	if (!o)
		return;
	if (o->fd >= 0)
		close(o->fd);
	free(o->map);
	free(o);
}

int virtio_blk_overlay_start(struct virtio_blk *d, uint64_t max_bytes)
{
	struct blk_overlay *o;

	if (d->ov)
		return -EBUSY;
	if (d->readonly)
		return 0; /* nothing is ever written */
	o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	o->nsec = d->capacity / VBLK_SECTOR;
	o->max_bytes = max_bytes;
	o->map = calloc((o->nsec + 63) / 64, 8);
	o->fd = memfd_create("doppel-disk-overlay", MFD_CLOEXEC);
	if (!o->map || o->fd < 0 || ftruncate(o->fd, (off_t)d->capacity)) {
		int rc = o->map ? -errno : -ENOMEM;
		ov_free(o);
		return rc ? rc : -ENOMEM;
	}
	virtio_blk_drain(d);
	d->ov = o;
	return 0;
}

int virtio_blk_overlay_reset(struct virtio_blk *d)
{
	struct blk_overlay *o = d->ov;

	if (!o)
		return 0;
	virtio_blk_drain(d);
	memset(o->map, 0, (o->nsec + 63) / 64 * 8);
	o->bytes = 0;
	if (ftruncate(o->fd, 0) || ftruncate(o->fd, (off_t)d->capacity))
		return -errno;
	pthread_mutex_lock(&d->t.lock);
	d->st.ov_resets++;
	pthread_mutex_unlock(&d->t.lock);
	return 0;
}

int virtio_blk_overlay_commit(struct virtio_blk *d, uint64_t *written)
{
	struct blk_overlay *o = d->ov;
	uint8_t *buf;
	int rc = 0;

	*written = 0;
	if (!o)
		return 0;
	virtio_blk_drain(d);
	buf = malloc(1u << 20);
	if (!buf)
		return -ENOMEM;
	for (uint64_t s = 0; s < o->nsec && !rc;) {
		if (!map_test(o, s)) {
			s++;
			continue;
		}
		uint64_t e = s + 1;
		while (e < o->nsec && map_test(o, e) && (e - s) * VBLK_SECTOR < (1u << 20))
			e++;
		size_t len = (e - s) * VBLK_SECTOR;
		if (pread_full(o->fd, buf, len, s * VBLK_SECTOR) ||
		    pwrite_full(d->fd, buf, len, s * VBLK_SECTOR))
			rc = -EIO;
		*written += len;
		s = e;
	}
	free(buf);
	if (!rc && fdatasync(d->fd))
		rc = -errno;
	if (rc)
		return rc; /* the overlay stays: the disk's truth is still image + overlay */
	d->ov = NULL;
	ov_free(o);
	return 0;
}

void virtio_blk_overlay_drop(struct virtio_blk *d)
{
	virtio_blk_drain(d);
	ov_free(d->ov);
	d->ov = NULL;
}

void blk_ov_destroy(struct virtio_blk *d)
{
	ov_free(d->ov);
	d->ov = NULL;
}

uint64_t virtio_blk_overlay_bytes(struct virtio_blk *d)
{
	return d->ov ? __atomic_load_n(&d->ov->bytes, __ATOMIC_RELAXED) : 0;
}
