/* snapshot.c — full and incremental snapshots of a VM to a file, and restore into a fresh VM. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/errf.h"
#include "replication/ckpt_engine.h"
#include "replication/snapshot.h"
#include "common/clock.h"

#define SNAP_MAX_CHAIN 64

/* Open a snapshot and read its header and its info record (the first record of the epoch). */
static int open_info(const char *path, int *fd, struct sr_in *in, struct sr_ctx **r, struct sr_header *h,
		     struct ckpt_info *info, char *err, size_t errlen)
{
	struct sr_record rec;
	int rc;

	*r = NULL;
	*fd = open(path, O_RDONLY | O_CLOEXEC);
	if (*fd < 0)
		return errf(err, errlen, -errno, "cannot open snapshot %s: %s", path, strerror(errno));
	sr_in_fd(in, *fd, -1);
	rc = sr_reader_new(r, in);
	if (rc) {
		errf(err, errlen, rc, "out of memory");
		goto err;
	}
	rc = sr_read_header(*r, h);
	if (!rc)
		rc = sr_read_record(*r, &rec);
	if (rc) {
		errf(err, errlen, rc, "snapshot %s: %s", path, sr_error(*r));
		goto err;
	}
	if (rec.type != SR_REC_DEVICE_STATE || rec.dev.kind != CKPT_DEV_INFO ||
	    rec.dev.blob_len != sizeof(*info)) {
		rc = errf(err, errlen, -EBADMSG, "snapshot %s: first record is not the snapshot info", path);
		goto err;
	}
	memcpy(info, rec.dev.blob, sizeof(*info));
	info->base_path[sizeof(info->base_path) - 1] = 0;
	return 0;
err:
	sr_ctx_free(*r);
	*r = NULL;
	close(*fd);
	*fd = -1;
	return rc;
}

int snap_read_header(const char *path, struct sr_header *h, char *err, size_t errlen)
{
	struct sr_in in;
	struct sr_ctx *r;
	struct ckpt_info info;
	int fd, rc = open_info(path, &fd, &in, &r, h, &info, err, errlen);

	if (rc)
		return rc;
	sr_ctx_free(r);
	close(fd);
	return 0;
}

struct rdisks {
	struct virtio_blk *const *dev;
	int n;
};

/* The snapshot's disk records against the VM's disks: identity, the clone's content (top level),
 * then its blocks. */
static int restore_disks(const struct rdisks *rd, struct disk_stage *ds, const char *path, bool top,
			 char *err, size_t errlen)
{
	uint32_t ver = 0;
	char e2[256];
	int rc = disk_stage_check(ds, rd->dev, rd->n, &ver, &disk_names_snapshot, e2, sizeof(e2));

	for (int d = 0; !rc && d < rd->n; d++)
		if (!ds->info[d].seen)
			rc = errf(e2, sizeof(e2), -EINVAL, "this VM has disk%d, the snapshot not", d);
	for (int d = 0; !rc && top && d < rd->n; d++) {
		uint64_t h;
		if (!ds->info[d].content)
			continue;
		rc = disk_content_hash(rd->dev[d], &h);
		if (rc)
			errf(e2, sizeof(e2), rc, "cannot read disk%d: %s", d, strerror(-rc));
		else if (h != ds->info[d].content)
			rc = errf(e2, sizeof(e2), -EINVAL,
				  "disk%d does not match the snapshot (its contents differ from the copy "
				  "made at the "
				  "snapshot, %s.disk%d)",
				  d, path, d);
	}
	if (!rc)
		rc = disk_stage_apply(ds, rd->dev, rd->n, e2, sizeof(e2));
	return rc ? errf(err, errlen, rc, "snapshot %s: %s", path, e2) : 0;
}

static int restore_one(struct vm *vm, const struct rdisks *rd, const char *path, int depth, uint64_t want_id,
		       bool apply_state, char *err, size_t errlen)
{
	struct sr_header h;
	struct ckpt_info info;
	/* direct: a full disk's blocks in one epoch must not be staged in memory */
	struct disk_stage ds = {.direct = rd->dev, .ndirect = rd->n, .names = &disk_names_snapshot};
	struct ckpt_stage stg = {.disk = &ds};
	struct sr_in in;
	struct sr_ctx *r;
	int fd, rc;

	if (depth > SNAP_MAX_CHAIN)
		return errf(err, errlen, -ELOOP, "snapshot chain longer than %d", SNAP_MAX_CHAIN);
	rc = open_info(path, &fd, &in, &r, &h, &info, err, errlen);
	if (rc)
		return rc;
	if (want_id && info.id != want_id) {
		rc = errf(err, errlen, -EINVAL,
			  "snapshot %s is not the base the incremental snapshot was taken from", path);
		goto out;
	}
	rc = sr_header_check_mem(&h, vm_mem(vm), err, errlen);
	if (!rc && h.nr_vcpus != (uint32_t)vm_nr_vcpus(vm)) {
		rc = errf(err, errlen, -EINVAL, "snapshot %s has %u vCPUs, the VM has %d", path, h.nr_vcpus,
			  vm_nr_vcpus(vm));
	}
	if (rc)
		goto out;
	if (info.base_id) {
		rc = restore_one(vm, rd, info.base_path, depth + 1, info.base_id, false, err, errlen);
		if (rc)
			goto out;
	}
	rc = ckpt_read_epoch(r, &stg, vm_mem(vm), err, errlen);
	if (rc == 0)
		rc = errf(err, errlen, -EBADMSG, "holds no checkpoint");
	if (rc < 0) {
		char e2[512];
		snprintf(e2, sizeof(e2), "%s", err);
		errf(err, errlen, rc, "snapshot %s: %s", path, e2);
		goto out;
	}
	{
		/* The image must end with END right after its one epoch: a file cut after the
		 * CHECKPOINT_END (or with a second epoch) is not a complete snapshot. */
		struct sr_record rec;
		rc = sr_read_record(r, &rec);
		if (!rc && rec.type != SR_REC_END)
			rc = errf(err, errlen, -EBADMSG, "snapshot %s: expected END after the checkpoint",
				  path);
		else if (rc)
			errf(err, errlen, rc, "snapshot %s: %s", path, sr_error(r));
		if (rc)
			goto out;
	}
	rc = restore_disks(rd, &ds, path, apply_state, err, errlen);
	if (!rc && apply_state)
		rc = ckpt_state_apply(&stg.st, vm, err, errlen);
out:
	ckpt_stage_free(&stg);
	disk_stage_free(&ds);
	sr_ctx_free(r);
	close(fd);
	return rc;
}

int snap_restore_disks(struct vm *vm, struct virtio_blk *const *disks, int nr_disk, const char *path,
		       char *err, size_t errlen)
{
	struct rdisks rd = {.dev = disks, .n = nr_disk};

	return restore_one(vm, &rd, path, 0, 0, true, err, errlen);
}

int snap_restore(struct vm *vm, const char *path, char *err, size_t errlen)
{
	return snap_restore_disks(vm, NULL, 0, path, err, errlen);
}

int snap_set_disks(struct snap *s, struct virtio_blk *const *devs, int n)
{
	int rc;

	if (s->disks_ready || !n)
		return 0;
	rc = disk_repl_init(&s->disks, devs, n, NULL, NULL);
	s->disks_ready = !rc;
	return rc;
}

/* Snapshots write their one epoch from RAM while paused; the commit makes the file. */
struct take {
	struct snap *s;
	const char *path;
	char tmp[300];
	int fd;
	struct sr_out out;
	struct sr_ctx *w;
	struct ckpt_info info;
};

/* Still paused, the epoch written: END, fsync, rename into place, and the baseline of the next
 * incremental snapshot is this moment. */
static int snap_commit(struct ckpt_engine *e, struct ckpt_epoch *ep, char *err, size_t errlen)
{
	struct take *t = ep->opaque;
	struct snap *s = t->s;
	int rc = sr_write_end(t->w);

	if (rc)
		return errf(err, errlen, rc, "writing %s: %s", t->tmp,
			    *sr_error(t->w) ? sr_error(t->w) : strerror(-rc));
	if (fsync(t->fd) < 0 || close(t->fd) < 0) {
		rc = -errno;
		t->fd = -1;
		return errf(err, errlen, rc, "writing %s: %s", t->tmp, strerror(-rc));
	}
	t->fd = -1;
	if (rename(t->tmp, t->path) < 0)
		return errf(err, errlen, -errno, "cannot rename %s to %s: %s", t->tmp, t->path,
			    strerror(errno));
	t->tmp[0] = 0; /* renamed: nothing to clean up */
	if (!e->log) {
		char e2[256];
		/* fails when e.g. Remus owns the log: incrementals unavailable, the snapshot is
		 * fine */
		(void)ckpt_engine_start(e, e2, sizeof(e2));
	}
	s->last_id = t->info.id;
	s->last_epoch = t->info.epoch;
	s->last_with_disks = s->with_disks;
	snprintf(s->last_path, sizeof(s->last_path), "%s", t->path);
	return 0;
}

static const struct ckpt_ops snap_ops = {
	.name = "snapshot",
	.log_flags = DIRTY_START_CLEAN | DIRTY_YIELD,
	.commit = snap_commit,
};

/* Check the request; fill the image's info (id, epoch, base). */
static int snap_prepare(struct snap *s, struct take *t, const char *incremental_from, char *err,
			size_t errlen)
{
	if (strlen(t->path) + sizeof(".tmp.0123456789abcdef") > sizeof(t->tmp) ||
	    strlen(t->path) >= sizeof(t->info.base_path))
		return errf(err, errlen, -ENAMETOOLONG, "snapshot path too long");
	if (incremental_from) {
		struct sr_header bh;
		struct ckpt_info binfo;
		struct sr_in bin;
		struct sr_ctx *br;
		int bfd, rc = open_info(incremental_from, &bfd, &bin, &br, &bh, &binfo, err, errlen);
		if (rc)
			return rc;
		sr_ctx_free(br);
		close(bfd);
		if (!strcmp(incremental_from, t->path))
			return errf(err, errlen, -EINVAL,
				    "an incremental snapshot cannot overwrite its base %s", t->path);
		if (!s->eng.log || binfo.id != s->last_id)
			return errf(err, errlen, -EINVAL,
				    "%s is not the last snapshot of this VM; an incremental "
				    "snapshot needs the "
				    "previous one taken by this VM process",
				    incremental_from);
		if (s->disks_ready && s->with_disks != s->last_with_disks)
			return errf(err, errlen, -EINVAL,
				    "an incremental snapshot must carry its disks as its base %s did (%s)",
				    incremental_from,
				    s->last_with_disks ? "--with-disks" : "a clone of each image");
		t->info.base_id = binfo.id;
		snprintf(t->info.base_path, sizeof(t->info.base_path), "%s", incremental_from);
	}
	if (getrandom(&t->info.id, sizeof(t->info.id), 0) != sizeof(t->info.id) || !t->info.id)
		t->info.id = now_ns() ^ ((uint64_t)getpid() << 32);
	t->info.epoch = s->last_epoch + 1;
	return 0;
}

/* Create the temporary file and write what precedes the epoch: header and info. */
static int snap_open(struct take *t, struct vm *vm, char *err, size_t errlen)
{
	struct sr_header h;
	int rc;

	/* Guest RAM: 0600, a fresh unpredictable name created exclusively (never a file or symlink
	 * someone planted), renamed over PATH at commit. */
	for (int i = 0; i < 8; i++) {
		uint64_t r;
		if (getrandom(&r, sizeof(r), 0) != sizeof(r))
			r = now_ns() * 0x9e3779b97f4a7c15ull;
		snprintf(t->tmp, sizeof(t->tmp), "%s.tmp.%016llx", t->path, (unsigned long long)r);
		t->fd = open(t->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (t->fd >= 0 || errno != EEXIST)
			break;
	}
	if (t->fd < 0) {
		rc = errf(err, errlen, -errno, "cannot create %s: %s", t->tmp, strerror(errno));
		t->tmp[0] = 0; /* not ours: never unlinked */
		return rc;
	}
	sr_out_fd(&t->out, t->fd, -1);
	rc = sr_writer_new(&t->w, &t->out, true, 1);
	if (rc)
		return errf(err, errlen, rc, "out of memory");
	sr_header_from_mem(&h, vm_mem(vm), (uint32_t)vm_nr_vcpus(vm));
	rc = sr_write_header(t->w, &h);
	if (!rc)
		rc = ckpt_info_write(t->w, &t->info);
	if (rc)
		return errf(err, errlen, rc, "writing %s: %s", t->tmp,
			    *sr_error(t->w) ? sr_error(t->w) : strerror(-rc));
	return 0;
}

int snap_take(struct snap *s, struct vm *vm, const char *path, const char *incremental_from, bool stop,
	      int nthreads, struct snap_result *res, char *err, size_t errlen)
{
	struct take t = {.s = s, .path = path, .fd = -1};
	struct ckpt_epoch ep = {.all_pages = !incremental_from,
				.stay_paused = stop,
				.opaque = &t,
				.disk_data = s->with_disks,
				.disk_sidecar = s->with_disks ? NULL : path};
	int rc;

	memset(res, 0, sizeof(*res));
	if (!s->eng_ready) {
		rc = ckpt_engine_init(&s->eng, vm, &snap_ops, s);
		if (rc)
			return errf(err, errlen, rc, "out of memory");
		s->eng_ready = true;
	}
	s->eng.disks = s->disks_ready ? &s->disks : NULL;
	s->eng.batch->nthreads = nthreads;
	s->eng.batch->prog = &s->progress;
	rc = snap_prepare(s, &t, incremental_from, err, errlen);
	if (rc)
		return rc;
	rc = snap_open(&t, vm, err, errlen);
	if (rc)
		goto err;
	ep.epoch = t.info.epoch;
	ep.w = t.w;
	rc = ckpt_engine_epoch(&s->eng, &ep, err, errlen);
	if (rc) {
		if (rc == -ECANCELED && incremental_from && !ep.io_failed)
			errf(err, errlen, rc,
			     "the baseline of %s is gone (replication or migration took over dirty "
			     "logging since); take a full snapshot",
			     incremental_from);
		else if (ep.io_failed) {
			char e2[256];
			snprintf(e2, sizeof(e2), "%s", err);
			errf(err, errlen, rc, "writing %s: %s", t.tmp, e2);
		}
		/* The sync consumed the log's bits: the next incremental must follow a new full
		 * snapshot. */
		if (ep.quiesced)
			ckpt_engine_stop(&s->eng);
		goto err;
	}
	struct sr_stats ss;
	sr_stats(t.w, &ss);
	res->pages = ss.data_pages;
	res->zero_pages = ss.zero_pages;
	res->id = t.info.id;
	res->epoch = t.info.epoch;
	res->bytes = t.out.bytes;
	res->pause_ns = res->write_ns = ep.pause_ns;
	res->incremental = incremental_from != NULL;
	ckpt_state_free(&s->eng.stage.st); /* written: not kept until the next snapshot */
	sr_ctx_free(t.w);
	return 0;
err:
	sr_ctx_free(t.w);
	if (t.fd >= 0)
		close(t.fd);
	if (t.tmp[0]) /* ours (created exclusively) and not renamed into place */
		unlink(t.tmp);
	return rc;
}

void snap_free(struct snap *s)
{
	if (s->eng_ready)
		ckpt_engine_free(&s->eng);
	s->eng_ready = false;
	if (s->disks_ready)
		disk_repl_free(&s->disks);
	s->disks_ready = false;
}
