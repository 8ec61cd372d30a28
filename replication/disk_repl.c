/* disk_repl.c — the primary's disk write log and initial sync by block checksums (see disk_repl.h). */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <string.h>
#include <xxhash.h>

#include "common/clock.h"
#include "common/errf.h"
#include "replication/disk_repl.h"
#include "replication/remus_proto.h"

#define LOG_PREGROW (4u << 20)
#define OPS_PREGROW 1024u

/* ---- buffers ------------------------------------------------------------------------------------ */

static int buf_reserve(struct disk_buf *b, size_t nops, size_t bytes)
{
	if (nops > b->opcap) {
		size_t cap = b->opcap ? b->opcap : OPS_PREGROW;
		while (cap < nops)
			cap *= 2;
		void *n = realloc(b->ops, cap * sizeof(*b->ops));
		if (!n)
			return -ENOMEM;
		b->ops = n;
		b->opcap = cap;
	}
	if (bytes > b->cap) {
		size_t cap = b->cap ? b->cap : LOG_PREGROW;
		while (cap < bytes)
			cap *= 2;
		void *n = realloc(b->data, cap);
		if (!n)
			return -ENOMEM;
		b->data = n;
		b->cap = cap;
	}
	return 0;
}

/* Append one op (data copied from iov / data when op is OP_WRITE). Room must be reserved. */
static void buf_push(struct disk_buf *b, uint32_t disk, uint32_t op, uint64_t sector, uint64_t nsec,
		     const struct iovec *iov, unsigned niov, const void *data)
{
	struct disk_op *o = &b->ops[b->nops++];

	*o = (struct disk_op){.disk = disk, .op = op, .sector = sector, .nr_sectors = nsec, .off = b->len};
	if (op != SR_DISK_OP_WRITE)
		return;
	if (data) {
		memcpy(b->data + b->len, data, nsec * SR_DISK_SECTOR);
		b->len += nsec * SR_DISK_SECTOR;
		return;
	}
	for (unsigned i = 0; i < niov; i++) {
		memcpy(b->data + b->len, iov[i].iov_base, iov[i].iov_len);
		b->len += iov[i].iov_len;
	}
}

int disk_buf_write(struct sr_ctx *w, const struct disk_buf *b)
{
	int rc = 0;

	for (size_t i = 0; b && i < b->nops && !rc; i++) {
		const struct disk_op *o = &b->ops[i];
		rc = sr_write_disk_write(w, o->disk, o->op, o->sector, o->nr_sectors,
					 o->op == SR_DISK_OP_WRITE ? b->data + o->off : NULL);
	}
	return rc;
}

void disk_buf_free(struct disk_buf *b)
{
	free(b->ops);
	free(b->data);
	memset(b, 0, sizeof(*b));
}

/* ---- the write log (device callback) ------------------------------------------------------------ */

static void mark_blocks(struct disk_repl *dr, int disk, uint64_t sector, uint64_t nsec)
{
	uint64_t first = sector * SR_DISK_SECTOR / DISK_BLOCK;
	uint64_t last = ((sector + nsec) * SR_DISK_SECTOR - 1) / DISK_BLOCK;

	for (uint64_t b = first; b <= last && b < dr->nblocks[disk]; b++)
		dr->dirty[disk][b / 64] |= 1ull << (b % 64);
}

static int wlog(void *opaque, const struct virtio_blk_wreq *w)
{
	struct disk_repl_port *port = opaque;
	struct disk_repl *dr = port->dr;
	int disk = port->disk, rc = 0;

	pthread_mutex_lock(&dr->lock);
	if (dr->mode == DISK_SYNC) {
		if (w->type == VIRTIO_BLK_T_OUT)
			mark_blocks(dr, disk, w->sector, w->nr_sectors);
		for (unsigned i = 0; i < w->nr_ranges; i++)
			mark_blocks(dr, disk, w->range[i].sector, w->range[i].nr_sectors);
	} else if (dr->mode == DISK_LOG) {
		struct disk_buf *b = &dr->buf[dr->active];
		size_t bytes = w->type == VIRTIO_BLK_T_OUT ? w->nr_sectors * SR_DISK_SECTOR : 0;
		size_t nops = w->type == VIRTIO_BLK_T_OUT ? 1 : w->nr_ranges;
		uint32_t op = w->type == VIRTIO_BLK_T_OUT	? SR_DISK_OP_WRITE
			      : w->type == VIRTIO_BLK_T_DISCARD ? SR_DISK_OP_DISCARD
								: SR_DISK_OP_ZEROES;

		if (b->nops && (b->len + bytes > DISK_LOG_MAX || b->nops + nops > DISK_LOG_OPS_MAX)) {
			rc = -ENOSPC; /* held by the device until the next epoch's resume */
			dr->st.refused++;
		} else if (buf_reserve(b, b->nops + nops, b->len + bytes)) {
			rc = -ENOMEM;
			dr->st.refused++;
		} else if (w->type == VIRTIO_BLK_T_OUT) {
			buf_push(b, (uint32_t)disk, op, w->sector, w->nr_sectors, w->iov, w->niov, NULL);
		} else {
			for (unsigned i = 0; i < w->nr_ranges; i++)
				if (w->range[i].nr_sectors)
					buf_push(b, (uint32_t)disk, op, w->range[i].sector,
						 w->range[i].nr_sectors, NULL, 0, NULL);
		}
		if (!rc) {
			dr->st.logged_writes++;
			dr->st.logged_bytes += bytes;
		}
		if ((rc || b->len > DISK_LOG_MAX / 4 * 3 || b->nops > DISK_LOG_OPS_MAX / 4 * 3) &&
		    !dr->pressured && dr->pressure) {
			dr->pressured = true; /* once per epoch */
			dr->pressure(dr->opaque);
		}
	}
	pthread_mutex_unlock(&dr->lock);
	return rc;
}

/* ---- lifecycle ------------------------------------------------------------------------------------ */

int disk_repl_init(struct disk_repl *dr, struct virtio_blk *const *devs, int n, void (*pressure)(void *),
		   void *opaque)
{
	memset(dr, 0, sizeof(*dr));
	if (n < 0 || n > DISK_MAX)
		return -EINVAL;
	pthread_mutex_init(&dr->lock, NULL);
	dr->nr = n;
	dr->pressure = pressure;
	dr->opaque = opaque;
	for (int i = 0; i < n; i++) {
		dr->dev[i] = devs[i];
		dr->port[i] = (struct disk_repl_port){.dr = dr, .disk = i};
		dr->nblocks[i] = (virtio_blk_capacity(devs[i]) + DISK_BLOCK - 1) / DISK_BLOCK;
		dr->dirty[i] = calloc((dr->nblocks[i] + 63) / 64, 8);
		if (!dr->dirty[i]) {
			disk_repl_free(dr);
			return -ENOMEM;
		}
	}
	return 0;
}

void disk_repl_free(struct disk_repl *dr)
{
	disk_repl_stop(dr);
	for (int i = 0; i < DISK_MAX; i++) {
		free(dr->dirty[i]);
		free(dr->sums[i]);
	}
	for (int k = 0; k < DISK_NBUF; k++)
		disk_buf_free(&dr->buf[k]);
	pthread_mutex_destroy(&dr->lock);
	memset(dr, 0, sizeof(*dr));
}

int disk_repl_start(struct disk_repl *dr)
{
	int rc = 0;

	if (!dr->nr)
		return 0;
	pthread_mutex_lock(&dr->lock);
	for (int k = 0; k < DISK_NBUF && !rc; k++) {
		dr->buf[k].nops = dr->buf[k].len = 0;
		rc = buf_reserve(&dr->buf[k], OPS_PREGROW, LOG_PREGROW);
		if (!rc) /* touched now, not inside a pause or a completion */
			memset(dr->buf[k].data, 0, dr->buf[k].cap);
	}
	for (int i = 0; i < dr->nr; i++) {
		memset(dr->dirty[i], 0, (dr->nblocks[i] + 63) / 64 * 8);
		free(dr->sums[i]);
		dr->sums[i] = NULL;
		dr->nsums[i] = dr->sum_fill[i] = 0;
	}
	dr->sum_disk = -1;
	dr->active = 0;
	dr->pressured = false;
	dr->mode = rc ? DISK_OFF : DISK_SYNC;
	memset(&dr->st, 0, sizeof(dr->st));
	pthread_mutex_unlock(&dr->lock);
	if (rc)
		return rc;
	for (int i = 0; i < dr->nr; i++)
		virtio_blk_set_wlog(dr->dev[i], wlog, &dr->port[i]);
	return 0;
}

void disk_repl_stop(struct disk_repl *dr)
{
	if (!dr->nr || dr->mode == DISK_OFF)
		return;
	for (int i = 0; i < dr->nr; i++)
		virtio_blk_clear_wlog(dr->dev[i], &dr->port[i]);
	pthread_mutex_lock(&dr->lock);
	dr->mode = DISK_OFF;
	pthread_mutex_unlock(&dr->lock);
	for (int i = 0; i < dr->nr; i++)
		virtio_blk_kick(dr->dev[i]); /* writes the full log held complete now */
}

const struct disk_buf *disk_repl_freeze(struct disk_repl *dr)
{
	const struct disk_buf *b = NULL;

	if (!dr || !dr->nr)
		return NULL;
	pthread_mutex_lock(&dr->lock);
	if (dr->mode == DISK_LOG) {
		b = &dr->buf[dr->active];
		dr->active = (dr->active + 1) % DISK_NBUF;
		dr->buf[dr->active].nops = dr->buf[dr->active].len = 0;
		dr->pressured = false;
	}
	pthread_mutex_unlock(&dr->lock);
	return b;
}

void disk_repl_get_stats(struct disk_repl *dr, struct disk_repl_stats *st)
{
	pthread_mutex_lock(&dr->lock);
	*st = dr->st;
	st->log_bytes = dr->buf[dr->active].len;
	st->mode = dr->mode;
	pthread_mutex_unlock(&dr->lock);
}

/* ---- initial sync ------------------------------------------------------------------------------- */

int disk_repl_sums_add(struct disk_repl *dr, uint32_t type, uint64_t value)
{
	int d = dr->sum_disk;

	switch (type) {
	case REMUS_MSG_DISK_SUMS: {
		uint64_t disk = value >> 48, n = value & ((1ull << 48) - 1);
		if (disk >= DISK_MAX || (d >= 0 && dr->sum_fill[d] != dr->nsums[d]) || n > (1ull << 40))
			return -EBADMSG;
		free(dr->sums[disk]);
		dr->sums[disk] = n ? malloc(n * sizeof(uint64_t)) : NULL;
		if (n && !dr->sums[disk])
			return -ENOMEM;
		dr->nsums[disk] = n;
		dr->sum_fill[disk] = 0;
		dr->sum_disk = (int)disk;
		return 0;
	}
	case REMUS_MSG_DISK_SUM:
		if (d < 0 || dr->sum_fill[d] >= dr->nsums[d])
			return -EBADMSG;
		dr->sums[d][dr->sum_fill[d]++] = value;
		return 0;
	case REMUS_MSG_DISK_SUMS_END:
		if (d >= 0 && dr->sum_fill[d] != dr->nsums[d])
			return -EBADMSG;
		return 1;
	default:
		return -EBADMSG;
	}
}

int disk_block_sums(struct virtio_blk *dev, uint64_t **sums, uint64_t *nblocks)
{
	uint64_t cap = virtio_blk_capacity(dev), n = (cap + DISK_BLOCK - 1) / DISK_BLOCK;
	uint8_t *buf = malloc(DISK_BLOCK);
	uint64_t *s = malloc((n ? n : 1) * sizeof(uint64_t));
	int rc = buf && s ? 0 : -ENOMEM;

	for (uint64_t b = 0; b < n && !rc; b++) {
		size_t len = cap - b * DISK_BLOCK < DISK_BLOCK ? (size_t)(cap - b * DISK_BLOCK) : DISK_BLOCK;
		rc = virtio_blk_host_read(dev, b * DISK_BLOCK, buf, len);
		if (!rc)
			s[b] = XXH64(buf, len, 0);
	}
	free(buf);
	if (rc) {
		free(s);
		return rc;
	}
	*sums = s;
	*nblocks = n;
	return 0;
}

static bool all_zero(const uint8_t *p, size_t len)
{
	return !p[0] && !memcmp(p, p + 1, len - 1);
}

struct sync_out {
	struct sr_ctx *w;
	uint64_t *epoch;
	uint64_t bytes;
	bool open; /* records since the last CHECKPOINT_END */
	uint64_t last_ns; /* last write */
};

static int sync_close(struct sync_out *o)
{
	int rc = 0;

	if (o->open)
		rc = sr_write_checkpoint_end(o->w, (*o->epoch)++);
	o->open = false;
	o->bytes = 0;
	return rc;
}

/* Read block b of disk d and send it (all zero: as write-zeroes). */
static int send_block(struct disk_repl *dr, struct sync_out *o, int d, uint64_t b, uint8_t *buf,
		      uint64_t *sum)
{
	uint64_t cap = virtio_blk_capacity(dr->dev[d]), off = b * DISK_BLOCK;
	size_t len = cap - off < DISK_BLOCK ? (size_t)(cap - off) : DISK_BLOCK;
	int rc = virtio_blk_host_read(dr->dev[d], off, buf, len);

	if (rc)
		return rc;
	if (sum && *sum == XXH64(buf, len, 0)) {
		uint64_t now = now_ns();
		if (dr->hb_ns && now - o->last_ns > dr->hb_ns) {
			o->last_ns = now;
			rc = sr_write_record(o->w, dr->hb_rec, &now, sizeof(now));
		}
		return rc ? rc : 1; /* the standby has it */
	}
	o->open = true;
	o->last_ns = now_ns();
	pthread_mutex_lock(&dr->lock);
	dr->st.sent_bytes += len;
	pthread_mutex_unlock(&dr->lock);
	if (all_zero(buf, len))
		rc = sr_write_disk_write(o->w, (uint32_t)d, SR_DISK_OP_ZEROES, off / SR_DISK_SECTOR,
					 len / SR_DISK_SECTOR, NULL);
	else
		rc = sr_write_disk_write(o->w, (uint32_t)d, SR_DISK_OP_WRITE, off / SR_DISK_SECTOR,
					 len / SR_DISK_SECTOR, buf);
	if (!rc && (o->bytes += len) >= DISK_SYNC_EPOCH && o->epoch)
		rc = sync_close(o); /* a snapshot's one epoch (no epoch counter) is not split */
	return rc;
}

static int sync_err(struct sr_ctx *w, int rc, char *err, size_t errlen)
{
	return errf(err, errlen, rc, "disk sync: %s", *sr_error(w) ? sr_error(w) : strerror(-rc));
}

int disk_repl_sync(struct disk_repl *dr, struct sr_ctx *w, uint64_t *epoch, char *err, size_t errlen)
{
	struct sync_out o = {.w = w, .epoch = epoch, .last_ns = now_ns()};
	uint8_t *buf;
	char id[VIRTIO_BLK_ID_BYTES + 1];
	int rc = 0;

	if (!dr || !dr->nr)
		return 0;
	buf = malloc(DISK_BLOCK);
	if (!buf)
		return errf(err, errlen, -ENOMEM, "disk sync: out of memory");
	pthread_mutex_lock(&dr->lock);
	for (int d = 0; d < dr->nr; d++)
		dr->st.sync_blocks += dr->nblocks[d];
	pthread_mutex_unlock(&dr->lock);
	o.open = true; /* the DISK_INFO records */
	for (int d = 0; d < dr->nr && !rc; d++)
		rc = sr_write_disk_info(w, (uint32_t)d,
					virtio_blk_readonly(dr->dev[d]) ? SR_DISK_F_READONLY : 0,
					virtio_blk_capacity(dr->dev[d]), virtio_blk_id(dr->dev[d], id), 0);
	for (int d = 0; d < dr->nr && !rc; d++) {
		bool have = dr->sums[d] && dr->nsums[d] == dr->nblocks[d];
		for (uint64_t b = 0; b < dr->nblocks[d] && !rc; b++) {
			rc = send_block(dr, &o, d, b, buf, have ? &dr->sums[d][b] : NULL);
			pthread_mutex_lock(&dr->lock);
			dr->st.sync_done++;
			dr->st.sync_sent += rc == 0;
			pthread_mutex_unlock(&dr->lock);
			rc = rc == 1 ? 0 : rc;
		}
	}
	if (!rc)
		rc = sync_close(&o);
	free(buf);
	return rc ? sync_err(w, rc, err, errlen) : 0;
}

/* Take the dirty sets: empty ones take their place, so writes from now on mark those (log: the write
 * log switches to DISK_LOG in the same step). 0 or -ENOMEM; the caller frees the taken sets. */
static int take_dirty(struct disk_repl *dr, uint64_t *taken[DISK_MAX], bool log)
{
	for (int d = 0; d < dr->nr; d++)
		if (!(taken[d] = calloc((dr->nblocks[d] + 63) / 64, 8)))
			return -ENOMEM;
	pthread_mutex_lock(&dr->lock);
	for (int d = 0; d < dr->nr; d++) {
		uint64_t *t = dr->dirty[d];
		dr->dirty[d] = taken[d];
		taken[d] = t;
	}
	if (log)
		dr->mode = DISK_LOG;
	pthread_mutex_unlock(&dr->lock);
	return 0;
}

/* Send every block named by the taken sets; *count (a stat, under dr->lock) per block sent. */
static int send_taken(struct disk_repl *dr, struct sync_out *o, uint64_t *const taken[DISK_MAX], uint8_t *buf,
		      uint64_t *count)
{
	int rc = 0;

	for (int d = 0; d < dr->nr && !rc; d++)
		for (uint64_t b = 0; b < dr->nblocks[d] && !rc; b++)
			if (taken[d][b / 64] & (1ull << (b % 64))) {
				rc = send_block(dr, o, d, b, buf, NULL);
				pthread_mutex_lock(&dr->lock);
				*count += rc == 0;
				pthread_mutex_unlock(&dr->lock);
			}
	return rc;
}

static void free_taken(uint64_t *taken[DISK_MAX])
{
	for (int d = 0; d < DISK_MAX; d++)
		free(taken[d]);
}

/* One pass over the blocks written since the last: take the dirty sets (final: the write log switches
 * to DISK_LOG in the same step) and send what they name; final also closes the sync. */
static int send_dirty_pass(struct disk_repl *dr, struct sync_out *o, bool final, char *err, size_t errlen)
{
	uint64_t *dirty[DISK_MAX] = {0};
	uint8_t *buf = malloc(DISK_BLOCK);
	int rc = buf ? take_dirty(dr, dirty, final) : -ENOMEM;

	if (rc) {
		rc = errf(err, errlen, -ENOMEM, "disk %s: out of memory", final ? "sync" : "round");
		goto out;
	}
	rc = send_taken(dr, o, dirty, buf, final ? &dr->st.final_sent : &dr->st.round_blocks);
	if (!rc && final)
		rc = sync_close(o);
	if (rc)
		rc = sync_err(o->w, rc, err, errlen);
out:
	free_taken(dirty);
	free(buf);
	return rc;
}

int disk_repl_sync_final(struct disk_repl *dr, struct sr_ctx *w, uint64_t *epoch, char *err, size_t errlen)
{
	struct sync_out o = {.w = w, .epoch = epoch};

	if (!dr || !dr->nr)
		return 0;
	/* From here every completed write is logged with its data; the blocks written before are read
	 * now, after the switch, so they hold at least those writes (the log, applied later, wins). */
	return send_dirty_pass(dr, &o, true, err, errlen);
}

/* ---- migration's pre-copy rounds ----------------------------------------------------------------- */

static uint64_t block_len(struct disk_repl *dr, int d, uint64_t b)
{
	uint64_t cap = virtio_blk_capacity(dr->dev[d]), off = b * DISK_BLOCK;
	return cap - off < DISK_BLOCK ? cap - off : DISK_BLOCK;
}

uint64_t disk_repl_dirty_bytes(struct disk_repl *dr)
{
	uint64_t bytes = 0;

	if (!dr || !dr->nr)
		return 0;
	pthread_mutex_lock(&dr->lock);
	for (int d = 0; d < dr->nr; d++)
		for (uint64_t i = 0; i < (dr->nblocks[d] + 63) / 64; i++) /* no bit past the end is set */
			bytes += (uint64_t)__builtin_popcountll(dr->dirty[d][i]) * DISK_BLOCK;
	for (int d = 0; d < dr->nr; d++) { /* the last block may be short */
		uint64_t b = dr->nblocks[d] - 1;
		if (dr->dirty[d][b / 64] & (1ull << (b % 64)))
			bytes -= DISK_BLOCK - block_len(dr, d, b);
	}
	pthread_mutex_unlock(&dr->lock);
	return bytes;
}

int disk_repl_round(struct disk_repl *dr, struct sr_ctx *w, char *err, size_t errlen)
{
	struct sync_out o = {.w = w, .epoch = NULL, .last_ns = now_ns()};

	if (!dr || !dr->nr)
		return 0;
	return send_dirty_pass(dr, &o, false, err, errlen);
}

/* ---- snapshots -------------------------------------------------------------------------------- */

int disk_content_hash(struct virtio_blk *dev, uint64_t *hash)
{
	uint64_t *sums, n;
	int rc = disk_block_sums(dev, &sums, &n);

	if (rc)
		return rc;
	for (uint64_t i = 0; i < n; i++)
		sums[i] = htole64(sums[i]);
	*hash = XXH64(sums, n * sizeof(uint64_t), 0) | 1; /* never 0 ("not recorded") */
	free(sums);
	return 0;
}

/* Copy the image of dev to path: a reflink where the filesystem shares extents, else bytes. */
static int clone_image(struct virtio_blk *dev, const char *path, char *err, size_t errlen)
{
	uint64_t cap = virtio_blk_capacity(dev);
	int src = virtio_blk_backend_fd(dev), fd, rc = 0;
	uint8_t *buf;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return errf(err, errlen, -errno, "cannot create %s: %s", path, strerror(errno));
	if (ioctl(fd, FICLONE, src) == 0 && !ftruncate(fd, (off_t)cap))
		goto done;
	buf = malloc(1u << 20);
	if (!buf) {
		rc = errf(err, errlen, -ENOMEM, "out of memory");
		goto done;
	}
	for (uint64_t off = 0; off < cap && !rc; off += 1u << 20) {
		size_t len = cap - off < (1u << 20) ? (size_t)(cap - off) : (1u << 20);
		rc = virtio_blk_host_read(dev, off, buf, len);
		if (!rc && all_zero(buf, len))
			continue; /* stays a hole */
		if (!rc && pwrite(fd, buf, len, (off_t)off) != (ssize_t)len)
			rc = -(errno ? errno : EIO);
		if (rc)
			errf(err, errlen, rc, "cannot copy the disk to %s: %s", path, strerror(-rc));
	}
	free(buf);
	if (!rc && ftruncate(fd, (off_t)cap))
		rc = errf(err, errlen, -errno, "cannot size %s: %s", path, strerror(errno));
done:
	if (!rc && fsync(fd))
		rc = errf(err, errlen, -errno, "writing %s: %s", path, strerror(errno));
	close(fd);
	if (rc)
		unlink(path);
	return rc;
}

static int image_epoch(struct disk_repl *dr, struct sr_ctx *w, bool all, bool data, const char *sidecar,
		       char *err, size_t errlen)
{
	struct sync_out o = {.w = w, .epoch = NULL, .last_ns = now_ns()};
	char id[VIRTIO_BLK_ID_BYTES + 1], path[4096];
	uint8_t *buf = malloc(DISK_BLOCK);
	int rc = buf ? 0 : errf(err, errlen, -ENOMEM, "out of memory");

	for (int d = 0; d < dr->nr && !rc; d++) {
		uint64_t content = 0;
		if (sidecar) {
			snprintf(path, sizeof(path), "%s.disk%d", sidecar, d);
			rc = clone_image(dr->dev[d], path, err, errlen);
			if (!rc && (rc = disk_content_hash(dr->dev[d], &content)))
				errf(err, errlen, rc, "cannot read disk%d: %s", d, strerror(-rc));
			if (rc)
				break;
		}
		rc = sr_write_disk_info(
			w, (uint32_t)d, virtio_blk_readonly(dr->dev[d]) ? SR_DISK_F_READONLY : 0,
			virtio_blk_capacity(dr->dev[d]), virtio_blk_id(dr->dev[d], id), content);
		pthread_mutex_lock(&dr->lock);
		for (uint64_t b = 0; b < dr->nblocks[d] && !rc && data; b++)
			if (all || dr->dirty[d][b / 64] & (1ull << (b % 64))) {
				pthread_mutex_unlock(&dr->lock);
				rc = send_block(dr, &o, d, b, buf, NULL);
				pthread_mutex_lock(&dr->lock);
			}
		memset(dr->dirty[d], 0, (dr->nblocks[d] + 63) / 64 * 8); /* the next baseline is now */
		pthread_mutex_unlock(&dr->lock);
		if (rc && !*err)
			errf(err, errlen, rc, "%s", *sr_error(w) ? sr_error(w) : strerror(-rc));
	}
	free(buf);
	return rc;
}

int disk_repl_epoch(struct disk_repl *dr, struct sr_ctx *w, bool all, bool data, const char *sidecar,
		    char *err, size_t errlen)
{
	int rc;

	if (!dr || !dr->nr)
		return 0;
	if (dr->mode == DISK_LOG) {
		rc = disk_buf_write(w, disk_repl_freeze(dr));
		return rc ? errf(err, errlen, rc, "%s", *sr_error(w) ? sr_error(w) : strerror(-rc)) : 0;
	}
	err[0] = 0;
	return image_epoch(dr, w, all, data, sidecar, err, errlen);
}
