/* migrate_recv.c — the destination side: accept one migration, read it into the held VM, then run. */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/errf.h"
#include "migrate/migrate_priv.h"
#include "replication/checkpoint.h"
#include "replication/disk_repl.h"
#include "replication/sock.h"
#include "replication/tls.h"
#include "replication/stream.h"
#include "vmm/vmm.h"
#include "common/clock.h"
#include "common/log.h"

#define RECV_TIMEOUT_MS 10000 /* the source always sends within this (rounds, the final epoch, GO) */

int mig_dst_send(struct mig *m, uint32_t type, uint64_t t_start, uint64_t t_running, const char *text)
{
	pthread_mutex_lock(&m->tx_lock);
	int rc = mig_msg_send_link(m->fd, m->link, type, t_start, t_running, text);
	pthread_mutex_unlock(&m->tx_lock);
	return rc;
}

static void fail(struct mig *m, const char *fmt, const char *what)
{
	snprintf(m->in_err, sizeof(m->in_err), fmt, what);
}

/* Shared storage or not, per disk, before ACCEPT: a read-write image whose lock another process holds
 * (opened lock-later, `run --incoming`) is the source's and may only be migrated with --shared-disks
 * (no block may be written into it); one whose lock this VM holds is its own, and --shared-disks would
 * run on it without the source's data. 0 or -EINVAL with a line for REJECT. */
static int disks_mode_check(struct mig *m, char *err, size_t errlen)
{
	for (int i = 0; i < vmm_disk_count(m->v); i++) {
		struct virtio_blk *d = vmm_disk(m->v, i);
		if (virtio_blk_readonly(d))
			continue;
		if (m->in_shared_disks && virtio_blk_locked(d))
			return errf(err, errlen, -EINVAL,
				    "--shared-disks, but disk%d here is not the source's image (not locked)",
				    i);
		if (!m->in_shared_disks && !virtio_blk_locked(d))
			return errf(err, errlen, -EINVAL,
				    "disk%d here is locked by another process (shared? use --shared-disks)",
				    i);
	}
	return 0;
}

/* After GO, before the vCPUs start: take the locks the source gave up right after sending GO. 0 or
 * -errno with m->in_err (this side then never runs: ERROR, and the source takes its locks back). */
static int disks_take(struct mig *m)
{
	for (int i = 0; i < vmm_disk_count(m->v); i++) {
		struct virtio_blk *d = vmm_disk(m->v, i);
		int rc = virtio_blk_locked(d) ? 0 : virtio_blk_lock(d, RECV_TIMEOUT_MS / 2);
		if (rc) {
			snprintf(m->in_err, sizeof(m->in_err),
				 "cannot take the lock of disk%d after GO: %s; discarded, never ran", i,
				 rc == -EBUSY ? "another process still holds it" : strerror(-rc));
			return rc;
		}
	}
	return 0;
}

/* Phase two: READY (everything is here and applied), then wait for GO. Without the whole GO this
 * side never runs: the source may have resumed. 0 (GO read) or -errno with m->in_err. */
static int await_go(struct mig *m)
{
	struct mig_msg msg;
	int rc = mig_msg_send_link(m->fd, m->link, MIG_READY, m->t_in_end, m->t_in_applied, NULL);

	if (rc) {
		fail(m, "cannot answer the source: %s", strerror(-rc));
		return rc;
	}
	pthread_mutex_lock(&m->lock);
	m->prog.state = "ready";
	pthread_mutex_unlock(&m->lock);
	rc = mig_msg_recv_link(m->fd, m->link, &msg, RECV_TIMEOUT_MS);
	m->t_in_go = now_ns();
	if (!rc && msg.type != MIG_GO)
		rc = -EPROTO;
	if (rc)
		fail(m, "no GO from the source (%s): discarded, never ran; the source keeps the VM",
		     rc == -ETIMEDOUT ? "timed out"
		     : rc == -EPIPE   ? "connection closed"
		     : rc == -EPROTO  ? "unexpected message"
				      : strerror(-rc));
	if (!rc)
		rc = disks_take(m);
	return rc;
}

/* Receiver thread: header check -> ACCEPT, epochs straight into RAM, keep the last state, END. */
/* With the machine state: every disk of this VM was described by the source. */
static int disks_seen(uint32_t verified, int nd, char *err, size_t errlen)
{
	for (int d = 0; d < nd; d++)
		if (!(verified & (1u << d)))
			return errf(err, errlen, -EINVAL, "this VM has disk%d, the source not", d);
	return 0;
}

static void *receiver_main(void *arg)
{
	struct mig *m = arg;
	struct vm *vm = vmm_vm(m->v);
	static const struct disk_peer_names names = {"the source", "on the source", "this VM"};
	struct virtio_blk *disks[DISK_MAX];
	/* direct: blocks go straight into this VM's images (it has not run); the stop-and-copy epoch may
	 * carry many */
	struct disk_stage ds = {.direct = disks, .ndirect = 0, .names = &names};
	struct ckpt_stage a = {.disk = &ds}, keep = {.disk = &ds}, tmp;
	int nd = vmm_disk_count(m->v) < DISK_MAX ? vmm_disk_count(m->v) : DISK_MAX;
	uint32_t verified = 0;
	struct sr_header h;
	struct sr_in in;
	struct sr_ctx *r = NULL;
	char err[400];
	int rc;

	for (int i = 0; i < nd; i++)
		disks[i] = vmm_disk(m->v, i);
	ds.ndirect = nd;
	sr_in_fd(&in, m->fd, RECV_TIMEOUT_MS);
	in.tls = m->link; /* TLS: decrypted straight into the reader's buffers */
	in.deadline_ns = now_ns() + MIG_HANDSHAKE_MS * 1000000ull; /* the header: no byte dribbling */
	rc = sr_reader_new(&r, &in);
	if (rc) {
		fail(m, "%s", "out of memory");
		goto out;
	}
	rc = sr_read_header(r, &h);
	if (rc) {
		fail(m, "bad migration stream: %s", sr_error(r));
		goto out;
	}
	rc = pc_dst_mode(m);
	if (rc)
		goto out;
	rc = sr_header_check_mem(&h, vm_mem(vm), err, sizeof(err));
	if (!rc && h.nr_vcpus != (uint32_t)vm_nr_vcpus(vm)) {
		snprintf(err, sizeof(err), "the source VM has %u vCPUs, this one %d", h.nr_vcpus,
			 vm_nr_vcpus(vm));
		rc = -EINVAL;
	}
	if (rc) {
		if (h.mem_size != vm_mem(vm)->size) /* keep the REJECT text within its 120 bytes */
			snprintf(err, sizeof(err),
				 "memory size/layout differs (source %llu MiB, here %llu MiB)",
				 (unsigned long long)(h.mem_size >> 20),
				 (unsigned long long)(vm_mem(vm)->size >> 20));
		mig_msg_send_link(m->fd, m->link, MIG_REJECT, 0, 0, err);
		fail(m, "rejected the migration: %s", err);
		goto out;
	}
	if ((rc = disks_mode_check(m, err, sizeof(err)))) {
		mig_msg_send(m->fd, MIG_REJECT, 0, 0, err);
		fail(m, "rejected the migration: %s", err);
		goto out;
	}
	in.deadline_ns = 0;
	/* t_start_ns = 1: this RAM is all zero (no kernel was loaded), zero ranges need not be sent. */
	rc = mig_msg_send_link(m->fd, m->link, MIG_ACCEPT, vmm_booted_kernel(m->v) ? 0 : 1, 0, NULL);
	if (rc) {
		fail(m, "cannot answer the source: %s", strerror(-rc));
		goto out;
	}
	for (;;) {
		rc = ckpt_read_epoch(r, &a, vm_mem(vm), err, sizeof(err));
		if (rc < 0 && !strncmp(err, "disk", 4)) { /* a disk that does not match this VM's */
			mig_msg_send_link(m->fd, m->link, MIG_REJECT, 0, 0, err);
			fail(m, "rejected the migration: %s", err);
			goto out;
		}
		if (rc < 0) {
			fail(m, "migration stream broken: %s", err);
			goto out;
		}
		if (rc == 0)
			break;
		/* disks: identity, then this epoch's blocks into this VM's images (not running yet) */
		if ((rc = disk_stage_check(&ds, disks, nd, &verified, &names, err, sizeof(err))) ||
		    (a.have_state && !m->in_shared_disks &&
		     (rc = disks_seen(verified, nd, err, sizeof(err)))) ||
		    (rc = disk_stage_apply(&ds, disks, nd, err, sizeof(err)))) {
			mig_msg_send_link(m->fd, m->link, MIG_REJECT, 0, 0, err);
			fail(m, "rejected the migration: %s", err);
			goto out;
		}
		if (!a.have_state && (rc = mig_msg_send_link(m->fd, m->link, MIG_EPOCH, a.epoch, 0, NULL))) {
			fail(m, "cannot answer the source: %s", strerror(-rc));
			goto out;
		}
		if (a.have_state) { /* keep it: the next read resets its stage */
			tmp = keep;
			keep = a;
			a = tmp;
		}
	}
	if (!keep.have_state) {
		fail(m, "%s", "migration stream ended without the VM state");
		rc = -EBADMSG;
		goto out;
	}
	m->t_in_end = now_ns();
	rc = ckpt_state_apply(&keep.st, vm, err, sizeof(err));
	m->t_in_applied = now_ns();
	if (rc) {
		fail(m, "cannot apply the migrated state: %s", err);
		goto out;
	}
	rc = pc_dst_prepare(m);
	if (rc < 0)
		goto out;
	rc = await_go(m);
	if (!rc && m->pc) { /* post-copy: run now, pages follow */
		rc = pc_dst_start(m);
		if (rc)
			goto out;
		__atomic_store_n(&m->pc_phase, 1, __ATOMIC_RELEASE);
		ev_async_send(vmm_loop(m->v), &m->in_async);
		rc = pc_dst_receive(m);
		m->in_rc = rc;
		ckpt_stage_free(&a);
		ckpt_stage_free(&keep);
		sr_ctx_free(r);
		ev_async_send(vmm_loop(m->v), &m->pc_async);
		return NULL;
	}
out:
	m->in_rc = rc ? rc : 0;
	if (rc && m->fd >= 0)
		mig_dst_send(m, MIG_ERROR, 0, 0, m->in_err);
	pc_dst_free(m); /* post-copy prepared, no GO: nothing ran */
	ckpt_stage_free(&a);
	ckpt_stage_free(&keep);
	disk_stage_free(&ds);
	sr_ctx_free(r);
	ev_async_send(vmm_loop(m->v), &m->in_async);
	return NULL;
}

/* Loop thread: GO arrived (or the stream broke, or GO did not come). Start the vCPUs, ack, announce. */
static void in_async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct mig *m = w->data;
	uint64_t t_start = now_ns(), t_run;
	int rc;

	(void)loop, (void)revents;
	int phase = __atomic_load_n(&m->pc_phase, __ATOMIC_ACQUIRE);
	bool pc = phase != 0; /* post-copy: the receiver goes on installing pages */
	if (phase == 2 || m->pc_started)
		return; /* post-copy already ended, or pc_async_cb started the vCPUs first */
	m->pc_started = pc;
	if (!pc) {
		pthread_join(m->receiver, NULL);
		m->recv_started = false;
	}
	if (!pc && m->in_rc) {
		struct json_object *f = json_object_new_object();
		json_object_object_add(f, "result", json_object_new_string("failed"));
		json_object_object_add(f, "error", json_object_new_string(m->in_err));
		mig_event(m, "migration-end", "in", f);
		log_error("migrate", vmm_name(m->v), "incoming migration failed: %s", m->in_err);
		close(m->fd);
		m->fd = -1;
		tls_link_put(m->link);
		m->link = NULL;
		vmm_stop(m->v, 1);
		return;
	}
	rc = vmm_start_vcpus(m->v);
	t_run = now_ns();
	if (rc) {
		log_error("migrate", vmm_name(m->v), "cannot start the migrated VM: %s", strerror(-rc));
		mig_dst_send(m, MIG_ERROR, 0, 0, "cannot start the vCPUs");
		if (pc) { /* the receiver ends on the closed link; pc_async stops the VM */
			shutdown(m->fd, SHUT_RDWR);
			return;
		}
		close(m->fd);
		m->fd = -1;
		tls_link_put(m->link);
		m->link = NULL;
		vmm_stop(m->v, 1);
		return;
	}
	char txt[100];
	snprintf(txt, sizeof(txt), "end=%llu applied=%llu go=%llu loop=%llu", (unsigned long long)m->t_in_end,
		 (unsigned long long)m->t_in_applied, (unsigned long long)m->t_in_go,
		 (unsigned long long)t_start);
	mig_dst_send(m, MIG_RUNNING, m->t_in_end, t_run, txt);
	log_debug("migrate", vmm_name(m->v), "incoming migration complete, running");
	struct json_object *f = json_object_new_object();
	json_object_object_add(f, "result", json_object_new_string("completed"));
	json_object_object_add(f, "apply_ms",
			       json_object_new_double((double)(m->t_in_applied - m->t_in_end) / 1e6));
	json_object_object_add(f, "go_to_running_ms",
			       json_object_new_double((double)(t_run - m->t_in_go) / 1e6));
	mig_event(m, "migration-end", "in", f);
	vmm_net_announce(m->v);
	if (pc)
		return; /* pc_async_cb ends it */
	close(m->fd);
	m->fd = -1;
	tls_link_put(m->link);
	m->link = NULL;
	pthread_mutex_lock(&m->lock);
	m->prog = (struct mig_progress){.state = "completed"};
	pthread_mutex_unlock(&m->lock);
}

/* Loop thread: the post-copy receiver ended. Every page installed: done. Otherwise the VM is lost:
 * stop it (first, so a vCPU woken by the unregister does not run on), then free. */
static void pc_async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct mig *m = w->data;

	(void)loop, (void)revents;
	pthread_join(m->receiver, NULL);
	if (!m->in_rc && !m->pc_started) /* finished before the loop got to in_async: start first */
		in_async_cb(loop, &m->in_async, 0);
	m->recv_started = false;
	m->pc_phase = 2;
	if (m->in_rc) {
		log_error("migrate", vmm_name(m->v), "incoming migration failed: %s", m->in_err);
		vmm_stop(m->v, 1);
	}
	pc_dst_free(m);
	close(m->fd);
	m->fd = -1;
	tls_link_put(m->link);
	m->link = NULL;
	pthread_mutex_lock(&m->lock);
	if (m->in_rc) {
		m->prog.state = "postcopy-failed";
		snprintf(m->prog.error, sizeof(m->prog.error), "%.299s", m->in_err);
	} else {
		m->prog.state = "completed";
		m->prog.pages_left = 0;
	}
	pthread_mutex_unlock(&m->lock);
}

/* TLS handshake and certificate check of an accepted source, on the loop (the destination does
 * nothing else while it waits), bounded by MIG_HANDSHAKE_MS. 0 with *fd the relay's end, or -errno
 * after closing the connection with one log line. */
static int secure_accept(struct mig *m, int *fd, struct tls_link **link)
{
	char addr[80] = "?", id[TLS_ID_MAX], err[300];
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int rc;

	if (getpeername(*fd, (struct sockaddr *)&ss, &sl) == 0)
		sock_str((struct sockaddr *)&ss, sl, addr, sizeof(addr));
	rc = tls_wrap_link(m->tls, true, fd, now_ns() + MIG_HANDSHAKE_MS * 1000000ull, link, id, sizeof(id),
			   err, sizeof(err));
	if (rc) {
		if (*fd >= 0)
			close(*fd);
		log_warn("migrate", vmm_name(m->v), "refused a connection from %s: %s", addr, err);
		return rc;
	}
	log_info("migrate", vmm_name(m->v), "incoming migration from %s over TLS 1.3 (peer certificate %s)",
		 addr, id);
	return 0;
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct mig *m = w->data;
	struct tls_link *link = NULL;
	int fd, rc;

	(void)revents;
	fd = sock_accept(m->lfd, RECV_TIMEOUT_MS);
	if (fd < 0)
		return; /* -EAGAIN or a failed handshake: keep listening */
	if (m->tls && secure_accept(m, &fd, &link))
		return; /* refused (one log line): keep listening, nothing changed */
	ev_io_stop(loop, w);
	close(m->lfd);
	m->lfd = -1;
	m->fd = fd;
	m->link = link;
	pthread_mutex_lock(&m->lock);
	m->prog = (struct mig_progress){.state = "incoming"};
	pthread_mutex_unlock(&m->lock);
	mig_event(m, "migration-start", "in", NULL);
	rc = pthread_create(&m->receiver, NULL, receiver_main, m);
	if (rc) {
		log_error("migrate", vmm_name(m->v), "cannot start the migration receiver: %s", strerror(rc));
		vmm_stop(m->v, 1);
		return;
	}
	m->recv_started = true;
}

/* Fault in the destination's RAM while nothing is happening yet: one madvise instead of a page
 * fault per page during the first round (page faults are expensive under nested virtualisation).
 * Only for RAM up to 4 GiB; errors are ignored (old kernels: pages fault in on demand). */
static void prefault(struct guest_mem *gm)
{
	if (gm->size > (4ull << 30))
		return;
	for (int i = 0; i < gm->nr; i++)
		(void)madvise(gm->r[i].host, gm->r[i].size, MADV_POPULATE_WRITE);
}

int mig_recv_listen(struct mig *m, const char *addr, char *err, size_t errlen)
{
	m->lfd = sock_listen(addr, err, errlen);
	if (m->lfd < 0)
		return m->lfd;
	prefault(vm_mem(vmm_vm(m->v)));
	ev_io_init(&m->accept_w, accept_cb, m->lfd, EV_READ);
	m->accept_w.data = m;
	ev_io_start(vmm_loop(m->v), &m->accept_w);
	ev_async_init(&m->in_async, in_async_cb);
	m->in_async.data = m;
	ev_async_start(vmm_loop(m->v), &m->in_async);
	ev_async_init(&m->pc_async, pc_async_cb);
	m->pc_async.data = m;
	ev_async_start(vmm_loop(m->v), &m->pc_async);
	pthread_mutex_lock(&m->lock);
	m->prog = (struct mig_progress){.state = "waiting"};
	pthread_mutex_unlock(&m->lock);
	return 0;
}
