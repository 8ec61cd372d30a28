/* uffd.c — userfaultfd over the guest RAM memfd: report missing / minor faults, install pages (see uffd.h). */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/errf.h"
#include "hv/uffd.h"

struct mem_uffd {
	struct guest_mem *gm;
	int fd;
	int nr_reg; /* regions registered */
	bool minor; /* MISSING|MINOR, pages written into the memfd with pwrite */
};

static const uint8_t zero_page[GUEST_PAGE_SIZE];

static int uffd_syscall(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (fd >= 0 || errno != EPERM)
		return fd;
	/* vm.unprivileged_userfaultfd=0 without CAP_SYS_PTRACE: the device node still works */
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0) {
		errno = EPERM;
		return -1;
	}
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
	close(dev);
	return fd;
}

/* A userfaultfd after the API handshake, asking for minor faults on shmem if minor; -errno. */
static int uffd_new(bool minor)
{
	struct uffdio_api api = {.api = UFFD_API, .features = minor ? UFFD_FEATURE_MINOR_SHMEM : 0};
	int fd = uffd_syscall();

	if (fd < 0)
		return -errno;
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		int rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

int mem_uffd_open(struct guest_mem *gm, bool want_minor, struct mem_uffd **out, char *err, size_t errlen)
{
	struct mem_uffd *u;
	int rc;

	*out = NULL;
	if (gm->memfd < 0)
		return errf(err, errlen, -EINVAL, "post-copy needs memfd-backed RAM");
	u = calloc(1, sizeof(*u));
	if (!u)
		return errf(err, errlen, -ENOMEM, "out of memory");
	u->gm = gm;
	u->fd = want_minor ? uffd_new(true) : -EINVAL;
	u->minor = u->fd >= 0;
	if (u->fd < 0)
		u->fd = uffd_new(false); /* no minor faults on shmem here: missing mode */
	if (u->fd < 0) {
		rc = errf(err, errlen, u->fd, "userfaultfd: %s", strerror(-u->fd));
		goto err;
	}
	for (int i = 0; i < gm->nr; i++) {
		struct uffdio_register reg = {
			.range = {.start = (uintptr_t)gm->r[i].host, .len = gm->r[i].size},
			.mode = UFFDIO_REGISTER_MODE_MISSING | (u->minor ? UFFDIO_REGISTER_MODE_MINOR : 0)};
		if (ioctl(u->fd, UFFDIO_REGISTER, &reg) < 0) {
			rc = errf(err, errlen, -errno, "userfaultfd register of guest RAM: %s",
				  strerror(errno));
			goto err;
		}
		u->nr_reg = i + 1;
		uint64_t need = u->minor ? 1ull << _UFFDIO_CONTINUE
					 : (1ull << _UFFDIO_COPY) | (1ull << _UFFDIO_ZEROPAGE);
		if ((reg.ioctls & need) != need) {
			rc = errf(err, errlen, -EOPNOTSUPP, "userfaultfd: no %s on guest RAM",
				  u->minor ? "CONTINUE" : "COPY/ZEROPAGE");
			goto err;
		}
	}
	*out = u;
	return 0;
err:
	mem_uffd_close(u);
	return rc;
}

bool mem_uffd_minor(const struct mem_uffd *u)
{
	return u->minor;
}

void mem_uffd_close(struct mem_uffd *u)
{
	if (!u)
		return;
	for (int i = 0; i < u->nr_reg; i++) {
		struct uffdio_range r = {.start = (uintptr_t)u->gm->r[i].host, .len = u->gm->r[i].size};
		(void)ioctl(u->fd, UFFDIO_UNREGISTER, &r); /* wakes the waiters of the range */
	}
	if (u->fd >= 0)
		close(u->fd);
	free(u);
}

int mem_uffd_next_fault(struct mem_uffd *u, uint64_t *idx, bool *minor, int timeout_ms)
{
	struct uffd_msg msg;

	for (;;) {
		struct pollfd p = {.fd = u->fd, .events = POLLIN};
		int pr = poll(&p, 1, timeout_ms);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0)
			return -errno;
		if (pr == 0)
			return 0;
		ssize_t n = read(u->fd, &msg, sizeof(msg));
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n < 0)
			return -errno;
		if (n != sizeof(msg))
			return -EIO;
		if (msg.event != UFFD_EVENT_PAGEFAULT)
			continue;
		for (int i = 0; i < u->gm->nr; i++) {
			const struct mem_region *r = &u->gm->r[i];
			uint64_t a = msg.arg.pagefault.address, h = (uintptr_t)r->host;
			if (a >= h && a - h < r->size) {
				*idx = r->pfn_base + ((a - h) >> GUEST_PAGE_SHIFT);
				if (minor)
					*minor = msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR;
				return 1;
			}
		}
	}
}

/* The guest mapping of [idx, idx + count) inside one region (and its memfd offset), or NULL. */
static uint8_t *host_of2(struct mem_uffd *u, uint64_t idx, uint64_t count, uint64_t *fd_off)
{
	for (int i = 0; i < u->gm->nr; i++) {
		const struct mem_region *r = &u->gm->r[i];
		uint64_t np = r->size >> GUEST_PAGE_SHIFT, off = (idx - r->pfn_base) << GUEST_PAGE_SHIFT;
		if (idx >= r->pfn_base && idx - r->pfn_base < np && count <= np - (idx - r->pfn_base)) {
			if (fd_off)
				*fd_off = r->fd_off + off;
			return r->host + off;
		}
	}
	return NULL;
}

static uint8_t *host_of(struct mem_uffd *u, uint64_t idx, uint64_t count)
{
	return host_of2(u, idx, count, NULL);
}

enum op { OP_COPY, OP_ZERO, OP_CONTINUE };

/* One UFFDIO_COPY / ZEROPAGE / CONTINUE over [idx, idx+count); on EEXIST (a page in the way is
 * mapped) go on page by page past it. */
static int install(struct mem_uffd *u, uint64_t idx, const uint8_t *src, uint64_t count, enum op op)
{
	uint8_t *dst = host_of(u, idx, count);
	uint64_t done = 0;

	if (!dst || !count)
		return count ? -EINVAL : 0;
	while (done < count) {
		uint64_t len = (count - done) << GUEST_PAGE_SHIFT;
		int64_t got;
		int rc;
		if (op == OP_CONTINUE) {
			struct uffdio_continue c = {
				.range = {.start = (uintptr_t)dst + (done << GUEST_PAGE_SHIFT), .len = len}};
			rc = ioctl(u->fd, UFFDIO_CONTINUE, &c);
			got = c.mapped;
		} else if (op == OP_COPY) {
			struct uffdio_copy c = {.dst = (uintptr_t)dst + (done << GUEST_PAGE_SHIFT),
						.src = (uintptr_t)src + (done << GUEST_PAGE_SHIFT),
						.len = len};
			rc = ioctl(u->fd, UFFDIO_COPY, &c);
			got = c.copy;
		} else {
			struct uffdio_zeropage z = {
				.range = {.start = (uintptr_t)dst + (done << GUEST_PAGE_SHIFT), .len = len}};
			rc = ioctl(u->fd, UFFDIO_ZEROPAGE, &z);
			got = z.zeropage;
		}
		if (rc == 0) {
			done = count;
			break;
		}
		if (got > 0)
			done += (uint64_t)got >> GUEST_PAGE_SHIFT;
		if (errno == EAGAIN || errno == EINTR)
			continue;
		if (errno != EEXIST)
			return -errno;
		/* the page at done is present: skip it (and wake anyone waiting on it) */
		mem_uffd_wake(u, idx + done);
		done++;
	}
	return 0;
}

/* Minor mode: write the page cache (src, or zeros) with pwritev — not through a second mapping,
 * whose first touch of each page would cost a page fault of its own — then map it. */
static int write_and_map(struct mem_uffd *u, uint64_t idx, const void *src, uint64_t count)
{
	struct iovec iov[64];
	uint64_t off, done = 0;

	if (!count || !host_of2(u, idx, count, &off))
		return count ? -EINVAL : 0;
	while (done < count) {
		int n = 0;
		if (src) {
			iov[n++] = (struct iovec){(uint8_t *)src + (done << GUEST_PAGE_SHIFT),
						  (count - done) << GUEST_PAGE_SHIFT};
		} else {
			for (; n < 64 && done + (uint64_t)n < count; n++)
				iov[n] = (struct iovec){(void *)zero_page, GUEST_PAGE_SIZE};
		}
		ssize_t w = pwritev(u->gm->memfd, iov, n, (off_t)(off + (done << GUEST_PAGE_SHIFT)));
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		if (w == 0 || w % GUEST_PAGE_SIZE)
			return -EIO;
		done += (uint64_t)w >> GUEST_PAGE_SHIFT;
	}
	return install(u, idx, NULL, count, OP_CONTINUE);
}

int mem_uffd_copy(struct mem_uffd *u, uint64_t idx, const void *src, uint64_t count)
{
	return u->minor ? write_and_map(u, idx, src, count) : install(u, idx, src, count, OP_COPY);
}

int mem_uffd_zero(struct mem_uffd *u, uint64_t idx, uint64_t count)
{
	return u->minor ? write_and_map(u, idx, NULL, count) : install(u, idx, NULL, count, OP_ZERO);
}

int mem_uffd_continue(struct mem_uffd *u, uint64_t idx)
{
	return u->minor ? install(u, idx, NULL, 1, OP_CONTINUE) : -EOPNOTSUPP;
}

int mem_uffd_zap(struct mem_uffd *u, uint64_t first, uint64_t count)
{
	return u->minor ? mem_zap(u->gm, first, count) : -EOPNOTSUPP;
}

void mem_uffd_wake(struct mem_uffd *u, uint64_t idx)
{
	uint8_t *p = host_of(u, idx, 1);
	struct uffdio_range r = {.start = (uintptr_t)p, .len = GUEST_PAGE_SIZE};

	if (p)
		(void)ioctl(u->fd, UFFDIO_WAKE, &r);
}
