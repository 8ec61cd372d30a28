/* remus_disk.c — Remus and the VM's disks: the primary's initial sync and write log, the standby's
 * checksums, identity check and per-epoch apply (docs/disk.md). */
#include <errno.h>
#include <json-c/json.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "common/clock.h"
#include "common/errf.h"
#include "replication/remus_priv.h"
#include "vmm/vmm.h"

#define SUMS_WAIT_MS 120000 /* the standby hashes its disks first: ~1 s per GiB from the page cache */
#define SUMS_SEND_TIMEOUT_MS 10000

static void pressure(void *opaque)
{
	remus_notify(opaque, RA_FORCE_EPOCH);
}

/* ---- primary ---------------------------------------------------------------------------------- */

int remus_disk_protect(struct remus *r)
{
	struct virtio_blk *devs[DISK_MAX];
	int n = vmm_disk_count(r->v), rc;

	if (!n)
		return 0;
	if (n > DISK_MAX)
		return -E2BIG;
	if (!r->disks_ready) {
		for (int i = 0; i < n; i++)
			devs[i] = vmm_disk(r->v, i);
		rc = disk_repl_init(&r->disks, devs, n, pressure, r);
		if (rc)
			return rc;
		r->disks_ready = true;
	}
	r->eng.disks = &r->disks;
	pthread_mutex_lock(&r->lock);
	r->sums_ready = false;
	pthread_mutex_unlock(&r->lock);
	return 0;
}

void remus_disk_msg(struct remus *r, const struct remus_msg *m)
{
	int rc = r->eng.disks ? disk_repl_sums_add(&r->disks, m->type, m->value)
			      : (m->type == REMUS_MSG_DISK_SUMS_END);

	if (rc == 0)
		return;
	/* complete, or out of order (then the sync sends every block: correct, only slower) */
	if (rc < 0)
		for (int i = 0; i < DISK_MAX; i++)
			r->disks.nsums[i] = 0;
	pthread_mutex_lock(&r->lock);
	r->sums_ready = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->lock);
}

/* Sender thread: wait for the standby's checksums, heartbeating meanwhile. 0, or -ECANCELED. */
static int wait_sums(struct remus *r, struct sr_ctx *w)
{
	uint64_t t0 = now_ns(), hb = (uint64_t)r->hb_timeout_ms * 1000000ull / 4;
	int rc = 0;

	pthread_mutex_lock(&r->lock);
	while (!r->sums_ready && !r->stop_sender && now_ns() - t0 < SUMS_WAIT_MS * 1000000ull && !rc) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += (long)hb;
		ts.tv_sec += ts.tv_nsec / 1000000000L;
		ts.tv_nsec %= 1000000000L;
		if (pthread_cond_timedwait(&r->cond, &r->lock, &ts) == ETIMEDOUT && !r->sums_ready) {
			uint64_t now = now_ns();
			pthread_mutex_unlock(&r->lock);
			rc = sr_write_record(w, REMUS_REC_HEARTBEAT, &now, sizeof(now));
			pthread_mutex_lock(&r->lock);
		}
	}
	if (!rc && r->stop_sender)
		rc = -ECANCELED;
	pthread_mutex_unlock(&r->lock);
	return rc;
}

int remus_disk_sync(struct remus *r, struct sr_ctx *w, uint64_t *epoch, bool final, char *err, size_t errlen)
{
	int rc;

	if (!r->eng.disks)
		return 0;
	r->disks.hb_ns = (uint64_t)r->hb_timeout_ms * 1000000ull / 4;
	r->disks.hb_rec = REMUS_REC_HEARTBEAT;
	if (final)
		return disk_repl_sync_final(&r->disks, w, epoch, err, errlen);
	rc = wait_sums(r, w);
	if (rc)
		return errf(err, errlen, rc, "waiting for the standby's disk checksums: %s",
			    rc == -ECANCELED ? "stopped"
			    : *sr_error(w)   ? sr_error(w)
					     : strerror(-rc));
	return disk_repl_sync(&r->disks, w, epoch, err, errlen);
}

static const char *mode_name(int m)
{
	return m == DISK_SYNC ? "sync" : m == DISK_LOG ? "log" : "off";
}

void remus_disk_status(struct remus *r, struct json_object *o)
{
	struct json_object *d;

	if (r->role == REMUS_STANDBY || (r->nr_sdisk && !r->disks_ready)) { /* a standby, or it was */
		if (!r->nr_sdisk)
			return;
		d = json_object_new_object();
		pthread_mutex_lock(&r->lock);
		json_object_object_add(d, "disks", json_object_new_int(r->nr_sdisk));
		json_object_object_add(d, "verified",
				       json_object_new_int((int)__builtin_popcount(r->disks_verified)));
		json_object_object_add(d, "applied_writes",
				       json_object_new_int64((int64_t)r->dstage.ops_applied));
		json_object_object_add(d, "applied_bytes",
				       json_object_new_int64((int64_t)r->dstage.bytes_applied));
		json_object_object_add(d, "overlay_written_back",
				       json_object_new_int64((int64_t)r->ov_written));
		pthread_mutex_unlock(&r->lock);
		uint64_t ob = 0, oh = 0, orst = 0;
		for (int i = 0; i < r->nr_sdisk; i++) {
			struct virtio_blk_stats st;
			virtio_blk_get_stats(r->sdisk[i], &st);
			ob += virtio_blk_overlay_bytes(r->sdisk[i]);
			oh += st.ov_held;
			orst += st.ov_resets;
		}
		/* COLO: the secondary's own writes since the last checkpoint, writes that waited for a
		 * checkpoint because the overlay was full, overlays discarded by checkpoints */
		json_object_object_add(d, "overlay_bytes", json_object_new_int64((int64_t)ob));
		json_object_object_add(d, "overlay_held", json_object_new_int64((int64_t)oh));
		json_object_object_add(d, "overlay_resets", json_object_new_int64((int64_t)orst));
		json_object_object_add(o, "disk", d);
		return;
	}
	if (!r->disks_ready)
		return;
	struct disk_repl_stats st;
	disk_repl_get_stats(&r->disks, &st);
	d = json_object_new_object();
	json_object_object_add(d, "disks", json_object_new_int(r->disks.nr));
	json_object_object_add(d, "mode", json_object_new_string(mode_name(st.mode)));
	/* initial sync progress: blocks of 64 KiB compared of all, sent because they differed */
	json_object_object_add(d, "sync_blocks", json_object_new_int64((int64_t)st.sync_blocks));
	json_object_object_add(d, "sync_done", json_object_new_int64((int64_t)st.sync_done));
	json_object_object_add(d, "sync_sent", json_object_new_int64((int64_t)st.sync_sent));
	json_object_object_add(d, "final_sent", json_object_new_int64((int64_t)st.final_sent));
	json_object_object_add(d, "logged_writes", json_object_new_int64((int64_t)st.logged_writes));
	json_object_object_add(d, "logged_bytes", json_object_new_int64((int64_t)st.logged_bytes));
	json_object_object_add(d, "log_bytes", json_object_new_int64((int64_t)st.log_bytes));
	json_object_object_add(d, "log_full", json_object_new_int64((int64_t)st.refused));
	json_object_object_add(o, "disk", d);
}

/* ---- standby ---------------------------------------------------------------------------------- */

void remus_disk_standby_init(struct remus *r)
{
	int n = vmm_disk_count(r->v);

	r->nr_sdisk = n < DISK_MAX ? n : DISK_MAX;
	for (int i = 0; i < r->nr_sdisk; i++)
		r->sdisk[i] = vmm_disk(r->v, i);
	r->stg.disk = &r->dstage;
}

static int send_all(int fd, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN)
			return -errno;
		struct pollfd pfd = {.fd = fd, .events = POLLOUT};
		if (poll(&pfd, 1, SUMS_SEND_TIMEOUT_MS) <= 0)
			return -ETIMEDOUT;
	}
	/* Leave room behind: the loop's next message (send_msg, non-blocking) must not be torn. */
	struct pollfd pfd = {.fd = fd, .events = POLLOUT};
	return poll(&pfd, 1, SUMS_SEND_TIMEOUT_MS) == 1 ? 0 : -ETIMEDOUT;
}

/* Reader thread, after the stream header: this standby's block checksums to the primary, so its
 * initial sync sends only blocks that differ. 0 or -errno. */
int remus_disk_send_sums(struct remus *r)
{
	uint8_t buf[256 * REMUS_MSG_SIZE];
	size_t n = 0;
	int rc = 0;

	for (int d = 0; d < r->nr_sdisk && !rc; d++) {
		uint64_t *sums = NULL, nb = 0;
		rc = disk_block_sums(r->sdisk[d], &sums, &nb);
		if (rc)
			break;
		remus_msg_encode(buf + n, REMUS_MSG_DISK_SUMS, (uint64_t)d << 48 | nb);
		n += REMUS_MSG_SIZE;
		for (uint64_t b = 0; b <= nb && !rc; b++) {
			if (n == sizeof(buf) || b == nb) {
				pthread_mutex_lock(
					&r->lock); /* whole messages between the loop's heartbeats */
				rc = r->cfd >= 0 ? send_all(r->cfd, buf, n) : -ENOTCONN;
				pthread_mutex_unlock(&r->lock);
				n = 0;
			}
			if (b < nb) {
				remus_msg_encode(buf + n, REMUS_MSG_DISK_SUM, sums[b]);
				n += REMUS_MSG_SIZE;
			}
		}
		free(sums);
	}
	if (!rc) {
		remus_msg_encode(buf, REMUS_MSG_DISK_SUMS_END, (uint64_t)r->nr_sdisk);
		pthread_mutex_lock(&r->lock);
		rc = r->cfd >= 0 ? send_all(r->cfd, buf, REMUS_MSG_SIZE) : -ENOTCONN;
		pthread_mutex_unlock(&r->lock);
	}
	return rc;
}

/* Reader thread, an epoch read and verified: check the disks' identity (DISK_INFO) and, before the
 * first machine state, that every disk of this standby was described. Returns 0, or -EINVAL with
 * err (reject the primary). */
int remus_disk_check(struct remus *r, char *err, size_t errlen)
{
	int rc = disk_stage_check(&r->dstage, r->sdisk, r->nr_sdisk, &r->disks_verified, &disk_names_remus,
				  err, errlen);

	if (rc || !r->stg.have_state)
		return rc;
	for (int d = 0; d < r->nr_sdisk; d++)
		if (!(r->disks_verified & (1u << d)))
			return errf(err, errlen, -EINVAL, "this standby has disk%d, the primary not", d);
	return 0;
}

/* Reader thread, with the epoch's pages: its disk writes into this standby's images. */
int remus_disk_apply(struct remus *r, char *err, size_t errlen)
{
	if (!r->dstage.b.nops)
		return 0;
	return disk_stage_apply(&r->dstage, r->sdisk, r->nr_sdisk, err, errlen);
}

/* ---- COLO secondary: the overlay ------------------------------------------------------------------ */

int remus_disk_colo_checkpoint(struct remus *r, char *err, size_t errlen)
{
	for (int d = 0; d < r->nr_sdisk; d++) {
		int rc;

		/* the first checkpoint starts it (the SVM has not run); later ones discard the SVM's writes:
		 * the primary's, applied to the image with this epoch, are the disk of the new state */
		rc = r->colo_ov_on ? virtio_blk_overlay_reset(r->sdisk[d])
				   : virtio_blk_overlay_start(r->sdisk[d], COLO_OVERLAY_MAX);
		if (rc)
			return errf(err, errlen, rc, "disk%d overlay: %s", d, strerror(-rc));
	}
	r->colo_ov_on = true;
	return 0;
}

int remus_disk_colo_takeover(struct remus *r, char *err, size_t errlen)
{
	int rc = 0;

	if (!r->colo_ov_on)
		return 0; /* the SVM never ran: the images are the last committed disk */
	rc = vm_pause(r->vm);
	if (rc)
		return errf(err, errlen, rc, "cannot pause to write the disk overlays back: %s",
			    strerror(-rc));
	for (int d = 0; d < r->nr_sdisk && !rc; d++) {
		uint64_t n = 0;
		rc = virtio_blk_overlay_commit(r->sdisk[d], &n);
		pthread_mutex_lock(&r->lock);
		r->ov_written += n;
		pthread_mutex_unlock(&r->lock);
		if (rc)
			errf(err, errlen, rc, "disk%d: cannot write the overlay back: %s", d, strerror(-rc));
	}
	if (!rc)
		r->colo_ov_on = false;
	vm_resume(r->vm);
	return rc;
}

void remus_disk_colo_discard(struct remus *r)
{
	if (!r->colo_ov_on)
		return;
	for (int d = 0; d < r->nr_sdisk; d++)
		virtio_blk_overlay_drop(r->sdisk[d]);
	r->colo_ov_on = false;
}
