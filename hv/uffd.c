/* uffd.c — userfaultfd over the guest RAM memfd: report missing pages, install them (see uffd.h). */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/errf.h"
#include "hv/uffd.h"

struct mem_uffd {
	struct guest_mem *gm;
	int fd;
	int nr_reg; /* regions registered */
};

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

int mem_uffd_open(struct guest_mem *gm, struct mem_uffd **out, char *err, size_t errlen)
{
	struct uffdio_api api = {.api = UFFD_API};
	struct mem_uffd *u;
	int rc;

	*out = NULL;
	if (gm->memfd < 0)
		return errf(err, errlen, -EINVAL, "post-copy needs memfd-backed RAM");
	u = calloc(1, sizeof(*u));
	if (!u)
		return errf(err, errlen, -ENOMEM, "out of memory");
	u->gm = gm;
	u->fd = uffd_syscall();
	if (u->fd < 0) {
		rc = errf(err, errlen, -errno, "userfaultfd: %s", strerror(errno));
		goto err;
	}
	if (ioctl(u->fd, UFFDIO_API, &api) < 0) {
		rc = errf(err, errlen, -errno, "userfaultfd API handshake: %s", strerror(errno));
		goto err;
	}
	for (int i = 0; i < gm->nr; i++) {
		struct uffdio_register reg = {
			.range = {.start = (uintptr_t)gm->r[i].host, .len = gm->r[i].size},
			.mode = UFFDIO_REGISTER_MODE_MISSING};
		if (ioctl(u->fd, UFFDIO_REGISTER, &reg) < 0) {
			rc = errf(err, errlen, -errno, "userfaultfd register of guest RAM: %s",
				  strerror(errno));
			goto err;
		}
		if (!(reg.ioctls & (1ull << _UFFDIO_COPY)) || !(reg.ioctls & (1ull << _UFFDIO_ZEROPAGE))) {
			u->nr_reg = i + 1;
			rc = errf(err, errlen, -EOPNOTSUPP, "userfaultfd: no COPY/ZEROPAGE on guest RAM");
			goto err;
		}
		u->nr_reg = i + 1;
	}
	*out = u;
	return 0;
err:
	mem_uffd_close(u);
	return rc;
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

int mem_uffd_next_fault(struct mem_uffd *u, uint64_t *idx, int timeout_ms)
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
				return 1;
			}
		}
	}
}

static uint8_t *host_of(struct mem_uffd *u, uint64_t idx, uint64_t count)
{
	for (int i = 0; i < u->gm->nr; i++) {
		const struct mem_region *r = &u->gm->r[i];
		uint64_t np = r->size >> GUEST_PAGE_SHIFT;
		if (idx >= r->pfn_base && idx - r->pfn_base < np && count <= np - (idx - r->pfn_base))
			return r->host + ((idx - r->pfn_base) << GUEST_PAGE_SHIFT);
	}
	return NULL;
}

/* One UFFDIO_COPY / ZEROPAGE over [idx, idx+count); on EEXIST (a page in the way is present) go on
 * page by page past it. */
static int install(struct mem_uffd *u, uint64_t idx, const uint8_t *src, uint64_t count)
{
	uint8_t *dst = host_of(u, idx, count);
	uint64_t done = 0;

	if (!dst || !count)
		return count ? -EINVAL : 0;
	while (done < count) {
		uint64_t len = (count - done) << GUEST_PAGE_SHIFT;
		int64_t got;
		int rc;
		if (src) {
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

int mem_uffd_copy(struct mem_uffd *u, uint64_t idx, const void *src, uint64_t count)
{
	return install(u, idx, src, count);
}

int mem_uffd_zero(struct mem_uffd *u, uint64_t idx, uint64_t count)
{
	return install(u, idx, NULL, count);
}

void mem_uffd_wake(struct mem_uffd *u, uint64_t idx)
{
	uint8_t *p = host_of(u, idx, 1);
	struct uffdio_range r = {.start = (uintptr_t)p, .len = GUEST_PAGE_SIZE};

	if (p)
		(void)ioctl(u->fd, UFFDIO_WAKE, &r);
}
