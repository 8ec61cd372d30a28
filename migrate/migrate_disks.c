/* migrate_disks.c — the source's disks: blocks up front and with every round (non-shared), the image locks at GO (shared). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/errf.h"
#include "common/log.h"
#include "migrate/sender.h"
#include "replication/disk_repl.h"
#include "vmm/vmm.h"

uint64_t mig_disk_sent_bytes(struct sender *s)
{
	struct disk_repl_stats st;

	if (!s->disks_ready)
		return 0;
	disk_repl_get_stats(&s->disks, &st);
	return st.sent_bytes;
}

/* Non-shared disks: the blocks written since the last round go with the next round's pages. */
int mig_disk_round(struct sender *s)
{
	uint64_t before = mig_disk_sent_bytes(s);
	int rc;

	if (!s->disks_ready)
		return 0;
	rc = disk_repl_round(&s->disks, s->w, s->err, sizeof(s->err));
	if (rc) {
		mig_link_error(s, rc, "migration stream failed");
		return rc;
	}
	uint64_t sent = mig_disk_sent_bytes(s) - before;
	s->disk_rounds += sent;
	s->disk_round_pages = (sent + GUEST_PAGE_SIZE - 1) / GUEST_PAGE_SIZE;
	return 0;
}

/* ---- shared storage: the image locks move at GO ------------------------------------------------ */

int mig_disks_flush(struct sender *s)
{
	int n = vmm_disk_count(s->m->v), rc;

	if (!s->m->p.shared_disks)
		return 0;
	for (int i = 0; i < n; i++) {
		struct virtio_blk *d = vmm_disk(s->m->v, i);
		virtio_blk_drain(d); /* no host write of ours lands after this (held ones re-run there) */
		if (!virtio_blk_readonly(d) && (rc = virtio_blk_host_flush(d)))
			return errf(s->err, sizeof(s->err), rc,
				    "cannot flush disk%d before the switchover: %s", i, strerror(-rc));
	}
	return 0;
}

/* Right after GO went out (committed): give up the read-write images' locks for the destination,
 * which takes them before its vCPUs start. */
void mig_disks_release(struct sender *s)
{
	int n = vmm_disk_count(s->m->v), rc;

	if (!s->m->p.shared_disks)
		return;
	for (int i = 0; i < n; i++) {
		struct virtio_blk *d = vmm_disk(s->m->v, i);
		if (!virtio_blk_readonly(d) && (rc = virtio_blk_unlock(d)))
			log_warn("migrate", vmm_name(s->m->v), "cannot release the lock of disk%d: %s", i,
				 strerror(-rc));
	}
	s->disks_released = true;
}

/* Before this side resumes after GO (the destination said it will not run, or the operator): take the
 * locks back. 0, or -EBUSY with why (another process, the destination?, holds an image: do not run). */
int mig_disks_retake(struct sender *s, char *why, size_t whylen)
{
	int n = vmm_disk_count(s->m->v), rc;

	if (!s->disks_released)
		return 0;
	for (int i = 0; i < n; i++) {
		struct virtio_blk *d = vmm_disk(s->m->v, i);
		if (!virtio_blk_readonly(d) && !virtio_blk_locked(d) && (rc = virtio_blk_lock(d, 2000)))
			return errf(
				why, whylen, rc,
				"disk%d's image is locked by another process (does the destination run?): "
				"%s stays paused",
				i, vmm_name(s->m->v));
	}
	s->disks_released = false;
	return 0;
}

/* Disks (not shared storage: the destination has its own images): the engine's write log in SYNC
 * mode marks the blocks written from the start; every block goes before the memory pre-copy (in
 * epochs the destination applies and acknowledges), those written meanwhile in the stop-and-copy
 * epoch (disk_data). */
int mig_setup_disks(struct sender *s)
{
	struct virtio_blk *devs[DISK_MAX];
	int n = vmm_disk_count(s->m->v), rc;

	if (!n || s->m->p.shared_disks) /* shared storage: no block is sent */
		return 0;
	if (n > DISK_MAX)
		return errf(s->err, sizeof(s->err), -E2BIG, "too many disks");
	for (int i = 0; i < n; i++)
		devs[i] = vmm_disk(s->m->v, i);
	rc = disk_repl_init(&s->disks, devs, n, NULL, NULL);
	if (rc)
		return errf(s->err, sizeof(s->err), rc, "out of memory");
	s->disks_ready = true;
	s->eng.disks = &s->disks;
	return 0;
}

int mig_precopy_disks(struct sender *s, uint64_t *next)
{
	uint64_t first = *next;
	int rc;

	if (!s->disks_ready)
		return 0;
	rc = disk_repl_sync(&s->disks, s->w, next, s->err, sizeof(s->err));
	s->disk_initial = mig_disk_sent_bytes(s);
	if (rc) {
		/* a destination that refused the disks closed the link: its reason is in the socket */
		struct mig_msg msg;
		while (!mig_msg_recv_link(s->fd, s->link, &msg, 500))
			if (msg.type == MIG_REJECT || msg.type == MIG_ERROR) {
				snprintf(s->err, sizeof(s->err), "destination rejected the migration: %s",
					 msg.text);
				break;
			}
		return rc;
	}
	for (uint64_t e = first; !rc && e < *next; e++) {
		s->epoch = e;
		rc = mig_wait_epoch(s);
	}
	return rc;
}
