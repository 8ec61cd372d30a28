/* snapshot.c — full and incremental snapshots of a VM to a file, and restore into a fresh VM. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "hv/dirty.h"
#include "replication/checkpoint.h"
#include "replication/snapshot.h"
#include "common/clock.h"

#define SNAP_MAX_CHAIN 64


/* Open a snapshot and read its header and its info record (the first record of the epoch). */
static int open_info(const char *path, int *fd, struct sr_in *in, struct sr_ctx **r,
		     struct sr_header *h, struct ckpt_info *info, char *err, size_t errlen)
{
	struct sr_record rec;
	int rc;

	*r = NULL;
	*fd = open(path, O_RDONLY | O_CLOEXEC);
	if (*fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot open snapshot %s: %s", path, strerror(errno));
		return rc;
	}
	sr_in_fd(in, *fd, -1);
	rc = sr_reader_new(r, in);
	if (rc) {
		snprintf(err, errlen, "out of memory");
		goto err;
	}
	rc = sr_read_header(*r, h);
	if (!rc)
		rc = sr_read_record(*r, &rec);
	if (rc) {
		snprintf(err, errlen, "snapshot %s: %s", path, sr_error(*r));
		goto err;
	}
	if (rec.type != SR_REC_DEVICE_STATE || rec.dev.kind != CKPT_DEV_INFO ||
	    rec.dev.blob_len != sizeof(*info)) {
		snprintf(err, errlen, "snapshot %s: first record is not the snapshot info", path);
		rc = -EBADMSG;
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

static int restore_one(struct vm *vm, const char *path, int depth, uint64_t want_id, bool apply_state,
		       char *err, size_t errlen)
{
	struct sr_header h;
	struct ckpt_info info;
	struct ckpt_stage stg = {0};
	struct sr_in in;
	struct sr_ctx *r;
	int fd, rc;

	if (depth > SNAP_MAX_CHAIN) {
		snprintf(err, errlen, "snapshot chain longer than %d", SNAP_MAX_CHAIN);
		return -ELOOP;
	}
	rc = open_info(path, &fd, &in, &r, &h, &info, err, errlen);
	if (rc)
		return rc;
	if (want_id && info.id != want_id) {
		snprintf(err, errlen, "snapshot %s is not the base the incremental snapshot was taken from", path);
		rc = -EINVAL;
		goto out;
	}
	rc = sr_header_check_mem(&h, vm_mem(vm), err, errlen);
	if (!rc && h.nr_vcpus != (uint32_t)vm_nr_vcpus(vm)) {
		snprintf(err, errlen, "snapshot %s has %u vCPUs, the VM has %d", path, h.nr_vcpus,
			 vm_nr_vcpus(vm));
		rc = -EINVAL;
	}
	if (rc)
		goto out;
	if (info.base_id) {
		rc = restore_one(vm, info.base_path, depth + 1, info.base_id, false, err, errlen);
		if (rc)
			goto out;
	}
	rc = ckpt_read_epoch(r, &stg, vm_mem(vm), err, errlen);
	if (rc == 0) {
		snprintf(err, errlen, "snapshot %s holds no checkpoint", path);
		rc = -EBADMSG;
	}
	if (rc < 0) {
		char e2[512];
		snprintf(e2, sizeof(e2), "snapshot %s: %s", path, err);
		snprintf(err, errlen, "%s", e2);
		goto out;
	}
	{
		/* The image must end with END right after its one epoch: a file cut after the
		 * CHECKPOINT_END (or with a second epoch) is not a complete snapshot. */
		struct sr_record rec;
		rc = sr_read_record(r, &rec);
		if (!rc && rec.type != SR_REC_END) {
			snprintf(err, errlen, "snapshot %s: expected END after the checkpoint", path);
			rc = -EBADMSG;
		} else if (rc) {
			snprintf(err, errlen, "snapshot %s: %s", path, sr_error(r));
		}
		if (rc)
			goto out;
	}
	rc = apply_state ? ckpt_state_apply(&stg.st, vm, err, errlen) : 0;
out:
	ckpt_stage_free(&stg);
	sr_ctx_free(r);
	close(fd);
	return rc;
}

int snap_restore(struct vm *vm, const char *path, char *err, size_t errlen)
{
	return restore_one(vm, path, 0, 0, true, err, errlen);
}

int snap_take(struct snap *s, struct vm *vm, const char *path, const char *incremental_from,
	      bool stop, int nthreads, struct snap_result *res, char *err, size_t errlen)
{
	struct guest_mem *gm = vm_mem(vm);
	struct ckpt_info info = {0};
	struct ckpt_state st = {0};
	struct sr_header h;
	struct sr_out out;
	struct sr_ctx *w = NULL;
	uint64_t *bitmap = NULL, t0, t1;
	char tmp[300];
	int fd = -1, rc;

	memset(res, 0, sizeof(*res));
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp) ||
	    strlen(path) >= sizeof(info.base_path)) {
		snprintf(err, errlen, "snapshot path too long");
		return -ENAMETOOLONG;
	}
	if (incremental_from) {
		struct sr_header bh;
		struct ckpt_info binfo;
		struct sr_in bin;
		struct sr_ctx *br;
		int bfd;
		rc = open_info(incremental_from, &bfd, &bin, &br, &bh, &binfo, err, errlen);
		if (rc)
			return rc;
		sr_ctx_free(br);
		close(bfd);
		if (!strcmp(incremental_from, path)) {
			snprintf(err, errlen, "an incremental snapshot cannot overwrite its base %s", path);
			return -EINVAL;
		}
		if (!s->log || binfo.id != s->last_id) {
			snprintf(err, errlen,
				 "%s is not the last snapshot of this VM; an incremental snapshot needs the "
				 "previous one taken by this VM process",
				 incremental_from);
			return -EINVAL;
		}
		info.base_id = binfo.id;
		snprintf(info.base_path, sizeof(info.base_path), "%s", incremental_from);
	}
	if (getrandom(&info.id, sizeof(info.id), 0) != sizeof(info.id) || !info.id)
		info.id = now_ns() ^ ((uint64_t)getpid() << 32);
	info.epoch = s->last_epoch + 1;

	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
		return rc;
	}
	sr_out_fd(&out, fd, -1);
	rc = sr_writer_new(&w, &out, true, 1);
	if (rc)
		goto err;
	bitmap = calloc((gm->nr_pages + 63) / 64, sizeof(uint64_t));
	if (!bitmap) {
		rc = -ENOMEM;
		goto err;
	}

	t0 = now_ns();
	rc = vm_pause(vm);
	if (rc) {
		snprintf(err, errlen, "cannot pause VM: %s", strerror(-rc));
		goto err;
	}
	if (s->log) {
		int64_t n = dirty_log_sync(s->log, bitmap);
		if (n == -ECANCELED && !incremental_from) {
			/* replication or migration took the dirty log over: a full snapshot needs none */
			dirty_log_free(s->log);
			s->log = NULL;
		} else if (n < 0) {
			rc = (int)n;
			if (rc == -ECANCELED)
				snprintf(err, errlen, "the baseline of %s is gone (replication or migration took "
					 "over dirty logging since); take a full snapshot", incremental_from);
			else
				snprintf(err, errlen, "dirty log sync failed: %s", strerror(-rc));
			goto err_resume;
		}
	}
	rc = ckpt_state_capture(&st, vm, err, errlen);
	if (rc)
		goto err_resume;
	sr_header_from_mem(&h, gm, (uint32_t)vm_nr_vcpus(vm));
	rc = sr_write_header(w, &h);
	if (!rc)
		rc = ckpt_info_write(w, &info);
	if (!rc)
		rc = incremental_from
			     ? ckpt_write_dirty_pages_progress(w, gm, bitmap, nthreads, &s->progress)
			     : ckpt_write_all_pages_progress(w, gm, nthreads, &s->progress);
	if (!rc)
		rc = ckpt_state_write(w, &st);
	if (!rc)
		rc = sr_write_checkpoint_end(w, info.epoch);
	if (!rc)
		rc = sr_write_end(w);
	if (rc) {
		snprintf(err, errlen, "writing %s: %s", tmp, *sr_error(w) ? sr_error(w) : strerror(-rc));
		goto err_resume;
	}
	if (fsync(fd) < 0 || close(fd) < 0) {
		rc = -errno;
		fd = -1;
		snprintf(err, errlen, "writing %s: %s", tmp, strerror(-rc));
		goto err_resume;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
		goto err_resume;
	}
	/* The baseline for the next incremental snapshot is this moment, still paused. */
	if (!s->log) {
		char e2[256];
		if (dirty_log_start(&s->log, vm, DIRTY_START_CLEAN | DIRTY_YIELD, e2,
					  sizeof(e2)))
			s->log = NULL; /* incrementals unavailable (e.g. Remus owns the log); the snapshot is fine */
	}
	s->last_id = info.id;
	s->last_epoch = info.epoch;
	snprintf(s->last_path, sizeof(s->last_path), "%s", path);
	t1 = now_ns();
	if (!stop)
		vm_resume(vm);
	{
		struct sr_stats ss;
		sr_stats(w, &ss);
		res->pages = ss.data_pages;
		res->zero_pages = ss.zero_pages;
	}
	res->id = info.id;
	res->epoch = info.epoch;
	res->bytes = out.bytes;
	res->pause_ns = t1 - t0;
	res->write_ns = t1 - t0;
	res->incremental = incremental_from != NULL;
	ckpt_state_free(&st);
	sr_ctx_free(w);
	free(bitmap);
	return 0;

err_resume:
	/* The sync consumed the log's bits: the next incremental must follow a new full snapshot. */
	if (s->log) {
		dirty_log_free(s->log);
		s->log = NULL;
	}
	vm_resume(vm);
err:
	ckpt_state_free(&st);
	sr_ctx_free(w);
	free(bitmap);
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return rc;
}

void snap_free(struct snap *s)
{
	dirty_log_free(s->log);
	s->log = NULL;
}
