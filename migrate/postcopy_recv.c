/* postcopy_recv.c — the destination side of post-copy: discard stale pages, serve faults, install pushes. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "hv/dirty.h"
#include "hv/uffd.h"
#include "migrate/migrate_priv.h"
#include "replication/rw.h"
#include "vmm/vmm.h"

#define PC_RECV_TIMEOUT_MS 10000 /* the source pushes continuously until DONE */

struct pc_dst {
	struct guest_mem *gm;
	struct mem_uffd *u;
	uint64_t *stale; /* pages to come from the source (read-only after prepare) */
	uint64_t *have; /* stale pages installed (atomic bits) */
	uint64_t *asked; /* requested (fault thread only) */
	uint64_t missing; /* stale pages not installed yet (atomic) */
	uint64_t install_ns; /* receiver: time spent installing pages (write + map) */
	pthread_t fault_th;
	bool fault_started;
	bool stop; /* atomic */
	uint8_t buf[PC_MAX_RUN * GUEST_PAGE_SIZE];
};

static bool bit(const uint64_t *bm, uint64_t i)
{
	return __atomic_load_n(&bm[i / 64], __ATOMIC_ACQUIRE) >> (i % 64) & 1;
}

/* Exactly len bytes from the source; 0, -EPIPE (EOF), -ETIMEDOUT or -errno. */
static int read_full(struct mig *m, void *buf, size_t len)
{
	int fd = m->fd;
	size_t off = 0;

	if (m->link) { /* TLS: every read of this connection goes through the link */
		struct sr_in in;
		sr_in_fd(&in, fd, PC_RECV_TIMEOUT_MS);
		in.tls = m->link;
		ssize_t n = sr_in_read(&in, buf, len);
		return n < 0 ? (int)n : (size_t)n < len ? -EPIPE : 0;
	}

	while (off < len) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int pr = poll(&p, 1, PC_RECV_TIMEOUT_MS);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0)
			return pr == 0 ? -ETIMEDOUT : -errno;
		ssize_t n = recv(fd, (char *)buf + off, len - off, 0);
		if (n == 0)
			return -EPIPE;
		if (n < 0 && errno != EINTR && errno != EAGAIN)
			return -errno;
		if (n > 0)
			off += (size_t)n;
	}
	return 0;
}

static const char *rd_err(int rc)
{
	return rc == -EPIPE ? "connection closed" : rc == -ETIMEDOUT ? "timed out" : strerror(-rc);
}

/* Make the stale runs fault on their next access: minor mode zaps their guest PTEs only (the page
 * cache stays: a MINOR fault, decided by d->have); missing mode punches holes (a MISSING fault). */
static int discard(struct pc_dst *d)
{
	uint64_t nr = d->gm->nr_pages, pos = 0, p;

	while ((p = dirty_next(d->stale, nr, &pos)) != UINT64_MAX) {
		uint64_t e = p + 1;
		while (e < nr && bit(d->stale, e))
			e++;
		int rc = mem_uffd_minor(d->u) ? mem_uffd_zap(d->u, p, e - p) : mem_discard(d->gm, p, e - p);
		if (rc)
			return rc;
		d->missing += e - p;
		pos = e;
	}
	return 0;
}

int pc_dst_mode(struct mig *m)
{
	struct guest_mem *gm = vm_mem(vmm_vm(m->v));
	struct pc_frame f;
	int rc = read_full(m, &f, sizeof(f));

	if (rc) {
		snprintf(m->in_err, sizeof(m->in_err), "bad migration stream: %s", rd_err(rc));
		return rc;
	}
	if (f.magic != PC_MAGIC || f.type != PC_MODE || f.first > 1 ||
	    (f.count & ~(uint64_t)PC_MODE_SHARED_DISKS)) {
		snprintf(m->in_err, sizeof(m->in_err),
			 "bad migration stream: no mode frame after the header");
		return -EBADMSG;
	}
	m->in_shared_disks = f.count & PC_MODE_SHARED_DISKS;
	if (f.first == 1 && !vmm_booted_kernel(m->v)) {
		/* Unmapped, not dropped: the prefaulted page cache (zeros) stays, so the switch needs no
		 * PTE teardown for the stale set, and installing a pushed page overwrites a page instead
		 * of allocating one (a hole punched here made every install allocate). Missing mode (no
		 * MINOR faults) punches the stale set at the switch instead (discard()). */
		uint64_t t0 = now_ns();
		rc = mem_zap(gm, 0, gm->nr_pages);
		log_debug("migrate", vmm_name(m->v), "post-copy at once: RAM unmapped in %.1f ms (rc %d)",
			  (double)(now_ns() - t0) / 1e6, rc);
	}
	return 0;
}

int pc_dst_prepare(struct mig *m)
{
	struct guest_mem *gm = vm_mem(vmm_vm(m->v));
	size_t words = dirty_bitmap_words(gm->nr_pages);
	struct pc_frame f;
	struct pc_dst *d;
	char err[200];
	int rc = read_full(m, &f, sizeof(f));

	if (rc) {
		snprintf(m->in_err, sizeof(m->in_err), "migration stream broken after END: %s", rd_err(rc));
		return rc;
	}
	if (f.magic != PC_MAGIC || f.type != PC_SWITCH || f.first > 1 || (f.first == 1 && f.count != words) ||
	    (f.first == 0 && f.count)) {
		snprintf(m->in_err, sizeof(m->in_err), "bad switch frame after END");
		return -EBADMSG;
	}
	if (f.first == 0)
		return 0;
	d = calloc(1, sizeof(*d));
	if (!d) {
		snprintf(m->in_err, sizeof(m->in_err), "out of memory");
		return -ENOMEM;
	}
	m->pc = d;
	d->gm = gm;
	if (!(d->stale = calloc(words, 8)) || !(d->have = calloc(words, 8)) ||
	    !(d->asked = calloc(words, 8))) {
		rc = -ENOMEM;
		snprintf(m->in_err, sizeof(m->in_err), "out of memory");
		goto err;
	}
	rc = read_full(m, d->stale, words * 8);
	if (rc) {
		snprintf(m->in_err, sizeof(m->in_err), "migration stream broken: %s", rd_err(rc));
		goto err;
	}
	if (gm->nr_pages % 64)
		d->stale[words - 1] &= (1ull << (gm->nr_pages % 64)) - 1;
	uint64_t t0 = now_ns();
	rc = mem_uffd_open(gm, true, &d->u, err, sizeof(err));
	if (rc) {
		snprintf(m->in_err, sizeof(m->in_err), "post-copy not possible here: %s", err);
		goto err;
	}
	rc = discard(d);
	if (rc) {
		snprintf(m->in_err, sizeof(m->in_err), "post-copy: cannot discard stale pages: %s",
			 strerror(-rc));
		goto err;
	}
	log_debug("migrate", vmm_name(m->v),
		  "post-copy: faults registered (%s mode), %llu stale pages %s in %.1f ms",
		  mem_uffd_minor(d->u) ? "minor" : "missing", (unsigned long long)d->missing,
		  mem_uffd_minor(d->u) ? "unmapped" : "discarded", (double)(now_ns() - t0) / 1e6);
	pthread_mutex_lock(&m->lock);
	m->prog.postcopy = true;
	m->prog.pages_left = d->missing;
	pthread_mutex_unlock(&m->lock);
	return 1;
err:
	pc_dst_free(m);
	return rc;
}

/* Fault thread. A stale page: map it if it has arrived (its page cache is current: the receiver sets
 * `have` after writing it, before mapping it), else ask the source (once); the receiver maps it on
 * arrival, which wakes the vCPU. A page that is not stale: a MISSING fault is a hole, zero since it
 * was sent (install a zero page); a MINOR fault (its PTE went, the page cache is current) maps it. */
static void *fault_main(void *arg)
{
	struct mig *m = arg;
	struct pc_dst *d = m->pc;
	uint64_t idx, faults = 0, reqs = 0;
	bool minor;

	while (!__atomic_load_n(&d->stop, __ATOMIC_ACQUIRE)) {
		int rc = mem_uffd_next_fault(d->u, &idx, &minor, 50);
		if (rc <= 0) {
			if (rc < 0)
				log_error("migrate", vmm_name(m->v), "post-copy fault read: %s",
					  strerror(-rc));
			continue;
		}
		faults++;
		if (!bit(d->stale, idx)) {
			(void)(minor ? mem_uffd_continue(d->u, idx) : mem_uffd_zero(d->u, idx, 1));
		} else if (bit(d->have, idx)) {
			if (!mem_uffd_minor(d->u) || mem_uffd_continue(d->u, idx))
				mem_uffd_wake(d->u, idx);
		} else if (!bit(d->asked, idx)) {
			d->asked[idx / 64] |= 1ull << (idx % 64);
			reqs++;
			if (mig_dst_send(m, MIG_PAGE_REQ, idx, 0, NULL))
				log_warn("migrate", vmm_name(m->v), "post-copy: cannot ask for page %llu",
					 (unsigned long long)idx);
		}
		pthread_mutex_lock(&m->lock);
		m->prog.pc_faults = faults;
		m->prog.pc_requests = reqs;
		pthread_mutex_unlock(&m->lock);
	}
	return NULL;
}

int pc_dst_start(struct mig *m)
{
	int rc = pthread_create(&m->pc->fault_th, NULL, fault_main, m);

	if (rc) {
		snprintf(m->in_err, sizeof(m->in_err), "cannot start the post-copy fault thread");
		return -rc;
	}
	m->pc->fault_started = true;
	pthread_mutex_lock(&m->lock);
	m->prog.state = "postcopy";
	pthread_mutex_unlock(&m->lock);
	return 0;
}

/* One PC_PAGES / PC_ZERO frame: install what is still missing. */
static int install(struct mig *m, const struct pc_frame *f)
{
	struct pc_dst *d = m->pc;
	int rc;

	if (f->count == 0 || f->count > PC_MAX_RUN || f->first >= d->gm->nr_pages ||
	    f->count > d->gm->nr_pages - f->first)
		return -EBADMSG;
	for (uint64_t i = f->first; i < f->first + f->count; i++)
		if (!bit(d->stale, i) || bit(d->have, i))
			return -EBADMSG; /* the source sends each stale page once */
	if (f->type == PC_PAGES) {
		rc = read_full(m, d->buf, f->count * GUEST_PAGE_SIZE);
		if (rc)
			return rc;
	}
	/* Written (minor mode: into the page cache) and mapped, waking the waiters, before `have` is
	 * set: the fault thread maps a `have` page as its page cache is, so `have` never precedes the
	 * write. A vCPU that faulted meanwhile is woken by this mapping, whatever the fault thread saw. */
	uint64_t t0 = now_ns();
	rc = f->type == PC_PAGES ? mem_uffd_copy(d->u, f->first, d->buf, f->count)
				 : mem_uffd_zero(d->u, f->first, f->count);
	d->install_ns += now_ns() - t0;
	if (rc)
		return rc;
	for (uint64_t i = f->first; i < f->first + f->count; i++)
		__atomic_fetch_or(&d->have[i / 64], 1ull << (i % 64), __ATOMIC_RELEASE);
	d->missing -= f->count;
	return 0;
}

int pc_dst_receive(struct mig *m)
{
	struct pc_dst *d = m->pc;
	struct pc_frame f;
	int rc;

	for (;;) {
		rc = read_full(m, &f, sizeof(f));
		if (rc)
			break;
		if (f.magic != PC_MAGIC || (f.type != PC_PAGES && f.type != PC_ZERO && f.type != PC_DONE)) {
			rc = -EBADMSG;
			break;
		}
		if (f.type == PC_DONE) {
			rc = d->missing ? -EBADMSG : 0;
			break;
		}
		rc = install(m, &f);
		if (rc)
			break;
		pthread_mutex_lock(&m->lock);
		m->prog.pages_left = d->missing;
		pthread_mutex_unlock(&m->lock);
	}
	if (!rc)
		rc = mig_dst_send(m, MIG_PC_DONE, 0, 0, NULL);
	if (!rc)
		log_debug("migrate", vmm_name(m->v),
			  "post-copy: every page installed (%llu faults, %llu asked for; installing took "
			  "%.1f ms)",
			  (unsigned long long)m->prog.pc_faults, (unsigned long long)m->prog.pc_requests,
			  (double)d->install_ns / 1e6);
	if (rc) {
		char why[80];
		if (rc == -EBADMSG)
			snprintf(why, sizeof(why), "bad page frame from the source");
		else
			snprintf(why, sizeof(why), "the link to the source was lost (%s)", rd_err(rc));
		snprintf(
			m->in_err, sizeof(m->in_err),
			"post-copy failed: %s with %llu pages still on the source; the VM cannot run without "
			"them and is stopped (neither host holds the whole VM)",
			why, (unsigned long long)d->missing);
	}
	return rc;
}

void pc_dst_free(struct mig *m)
{
	struct pc_dst *d = m->pc;

	if (!d)
		return;
	__atomic_store_n(&d->stop, true, __ATOMIC_RELEASE);
	if (d->fault_started)
		pthread_join(d->fault_th, NULL);
	mem_uffd_close(d->u); /* unregisters: a vCPU still waiting wakes (the VM is stopping then) */
	free(d->stale);
	free(d->have);
	free(d->asked);
	free(d);
	m->pc = NULL;
}
