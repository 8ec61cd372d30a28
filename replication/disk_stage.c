/* disk_stage.c — the receiving side of disk replication: stage an epoch's DISK_WRITE/DISK_INFO records,
 * check the disks' identity, apply the writes at the epoch's commit. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/errf.h"
#include "replication/disk_repl.h"

static int check_one(const struct disk_info *i, unsigned d, struct virtio_blk *const *devs, int n,
		     const struct disk_peer_names *nm, char *err, size_t errlen);

static uint32_t blk_type(uint32_t op)
{
	return op == SR_DISK_OP_WRITE	 ? VIRTIO_BLK_T_OUT
	       : op == SR_DISK_OP_ZEROES ? VIRTIO_BLK_T_WRITE_ZEROES
					 : VIRTIO_BLK_T_DISCARD;
}

int disk_stage_add(struct disk_stage *s, const struct sr_record *rec, char *err, size_t errlen)
{
	struct disk_buf *b = &s->b;

	if (rec->type == SR_REC_DISK_INFO) {
		struct disk_info *i = &s->info[rec->dinfo.disk];
		if (!i->seen)
			s->nr_info++;
		*i = (struct disk_info){.seen = true,
					.flags = rec->dinfo.flags,
					.size = rec->dinfo.size,
					.content = rec->dinfo.content};
		memcpy(i->id, rec->dinfo.id, sizeof(i->id));
		if (!s->direct)
			return 0;
		int rc = check_one(i, rec->dinfo.disk, s->direct, s->ndirect, s->names, err, errlen);
		if (!rc)
			s->direct_ok |= 1ull << rec->dinfo.disk;
		return rc;
	}
	if (rec->type != SR_REC_DISK_WRITE)
		return errf(err, errlen, -EINVAL, "not a disk record");
	if (s->direct) {
		/* a VM that has not run: straight into the image, after that disk's identity matched */
		int rc;
		if (!(s->direct_ok & (1ull << rec->disk.disk)))
			return errf(err, errlen, -EBADMSG, "a write to disk%u before its DISK_INFO",
				    rec->disk.disk);
		rc = virtio_blk_host_apply(s->direct[rec->disk.disk], blk_type(rec->disk.op),
					   rec->disk.sector, rec->disk.nr_sectors, rec->disk.data);
		if (rc)
			return errf(err, errlen, rc, "cannot apply a write to disk%u at sector %llu: %s",
				    rec->disk.disk, (unsigned long long)rec->disk.sector, strerror(-rc));
		s->ops_applied++;
		s->bytes_applied += rec->disk.data ? rec->disk.nr_sectors * SR_DISK_SECTOR : 0;
		return 0;
	}
	size_t bytes = rec->disk.data ? rec->disk.nr_sectors * SR_DISK_SECTOR : 0;
	if (b->len + bytes > DISK_STAGE_MAX)
		return errf(err, errlen, -E2BIG, "epoch carries more than %u MiB of disk writes",
			    DISK_STAGE_MAX >> 20);
	if (b->nops >= DISK_STAGE_OPS_MAX)
		return errf(err, errlen, -E2BIG, "epoch carries more than %u disk writes",
			    DISK_STAGE_OPS_MAX);
	if (b->nops == b->opcap) {
		size_t cap = b->opcap ? b->opcap * 2 : 1024;
		void *n = realloc(b->ops, cap * sizeof(*b->ops));
		if (!n)
			return errf(err, errlen, -ENOMEM, "out of memory staging disk writes");
		b->ops = n;
		b->opcap = cap;
	}
	if (b->len + bytes > b->cap) {
		size_t cap = b->cap ? b->cap : (4u << 20);
		while (cap < b->len + bytes)
			cap *= 2;
		void *n = realloc(b->data, cap);
		if (!n)
			return errf(err, errlen, -ENOMEM, "out of memory staging disk writes");
		b->data = n;
		b->cap = cap;
	}
	b->ops[b->nops++] = (struct disk_op){.disk = rec->disk.disk,
					     .op = rec->disk.op,
					     .sector = rec->disk.sector,
					     .nr_sectors = rec->disk.nr_sectors,
					     .off = b->len};
	if (bytes)
		memcpy(b->data + b->len, rec->disk.data, bytes);
	b->len += bytes;
	return 0;
}

void disk_stage_reset(struct disk_stage *s)
{
	s->b.nops = s->b.len = 0;
	if (s->nr_info)
		memset(s->info, 0, sizeof(s->info));
	s->nr_info = 0;
}

void disk_stage_free(struct disk_stage *s)
{
	disk_buf_free(&s->b);
	memset(s, 0, sizeof(*s));
}

const struct disk_peer_names disk_names_remus = {"the primary", "on the primary", "this standby"};
const struct disk_peer_names disk_names_snapshot = {"the snapshot", "in the snapshot", "this VM"};

static int check_one(const struct disk_info *i, unsigned d, struct virtio_blk *const *devs, int n,
		     const struct disk_peer_names *nm, char *err, size_t errlen)
{
	char id[VIRTIO_BLK_ID_BYTES + 1];

	{
		if ((int)d >= n)
			return errf(err, errlen, -EINVAL, "%s has disk%u, %s not", nm->peer, d, nm->self);
		if (i->size != virtio_blk_capacity(devs[d]))
			return errf(err, errlen, -EINVAL, "disk%u is %llu bytes %s, %llu here", d,
				    (unsigned long long)i->size, nm->at,
				    (unsigned long long)virtio_blk_capacity(devs[d]));
		if (strcmp(i->id, virtio_blk_id(devs[d], id)))
			return errf(err, errlen, -EINVAL, "disk%u has id '%s' %s, '%s' here", d, i->id,
				    nm->at, id);
		if (!!(i->flags & SR_DISK_F_READONLY) != virtio_blk_readonly(devs[d]))
			return errf(err, errlen, -EINVAL, "disk%u is %s %s, %s here", d,
				    i->flags & SR_DISK_F_READONLY ? "read-only" : "read-write", nm->at,
				    virtio_blk_readonly(devs[d]) ? "read-only" : "read-write");
	}
	return 0;
}

int disk_stage_check(const struct disk_stage *s, struct virtio_blk *const *devs, int n, uint32_t *verified,
		     const struct disk_peer_names *nm, char *err, size_t errlen)
{
	for (unsigned d = 0; d < SR_MAX_DISKS; d++) {
		if (!s->info[d].seen)
			continue;
		int rc = check_one(&s->info[d], d, devs, n, nm, err, errlen);
		if (rc)
			return rc;
		*verified |= 1u << d;
	}
	if (s->nr_info && s->nr_info < n)
		for (int d = 0; d < n; d++)
			if (!s->info[d].seen)
				return errf(err, errlen, -EINVAL, "%s has disk%d, %s not", nm->self, d,
					    nm->peer);
	return 0;
}

int disk_stage_apply(struct disk_stage *s, struct virtio_blk *const *devs, int n, char *err, size_t errlen)
{
	for (size_t k = 0; k < s->b.nops; k++) {
		const struct disk_op *o = &s->b.ops[k];
		int rc;

		if ((int)o->disk >= n)
			return errf(err, errlen, -EINVAL,
				    "disk write for disk%u, which this VM does not have", o->disk);
		rc = virtio_blk_host_apply(devs[o->disk], blk_type(o->op), o->sector, o->nr_sectors,
					   o->op == SR_DISK_OP_WRITE ? s->b.data + o->off : NULL);
		if (rc)
			return errf(err, errlen, rc, "cannot apply a write to disk%u at sector %llu: %s",
				    o->disk, (unsigned long long)o->sector, strerror(-rc));
		s->ops_applied++;
		s->bytes_applied += o->op == SR_DISK_OP_WRITE ? o->nr_sectors * SR_DISK_SECTOR : 0;
	}
	return 0;
}
