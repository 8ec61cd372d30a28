/* rw.c — byte I/O for the checkpoint stream over descriptors (with poll timeouts) and memory. */
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "replication/rw.h"
#include "common/clock.h"
#include "replication/tls.h"

void sr_out_fd(struct sr_out *o, int fd, int timeout_ms)
{
	memset(o, 0, sizeof(*o));
	o->kind = SR_IO_FD;
	o->fd = fd;
	o->timeout_ms = timeout_ms;
}

void sr_out_mem(struct sr_out *o, size_t max)
{
	memset(o, 0, sizeof(*o));
	o->kind = SR_IO_MEM;
	o->fd = -1;
	o->max = max;
}

void sr_out_free(struct sr_out *o)
{
	if (o->kind == SR_IO_MEM) {
		free(o->buf);
		o->buf = NULL;
		o->len = o->cap = 0;
	}
}

/* Wait until fd is ready for `events`. 0 when ready, -ETIMEDOUT, or -errno. */
static int wait_fd(int fd, short events, int timeout_ms)
{
	struct pollfd p = {.fd = fd, .events = events};
	int n;

	do
		n = poll(&p, 1, timeout_ms);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n == 0)
		return -ETIMEDOUT;
	/* POLLHUP/POLLERR: let the following read/write report EOF or the error. */
	return 0;
}

static int mem_grow(struct sr_out *o, size_t need)
{
	size_t cap = o->cap ? o->cap : 64 * 1024;
	uint8_t *nb;

	if (need < o->len || (o->max && need > o->max))
		return -ENOSPC;
	while (cap < need) {
		if (cap > SIZE_MAX / 2)
			return -ENOMEM;
		cap *= 2;
	}
	if (o->max && cap > o->max)
		cap = o->max;
	nb = realloc(o->buf, cap);
	if (!nb)
		return -ENOMEM;
	o->buf = nb;
	o->cap = cap;
	return 0;
}

int sr_out_write(struct sr_out *o, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	int rc;

	if (o->kind == SR_IO_MEM) {
		if (o->len + len > o->cap) {
			rc = mem_grow(o, o->len + len);
			if (rc)
				return rc;
		}
		if (len)
			memcpy(o->buf + o->len, buf, len);
		o->len += len;
		o->bytes += len;
		return 0;
	}
	if (o->tls) {
		rc = tls_link_send(o->tls, buf, len, o->timeout_ms);
		if (!rc)
			o->bytes += len;
		return rc;
	}
	while (len) {
		ssize_t n;

		if (o->timeout_ms >= 0) {
			rc = wait_fd(o->fd, POLLOUT, o->timeout_ms);
			if (rc)
				return rc;
		}
		n = send(o->fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == ENOTSOCK)
			n = write(o->fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				rc = wait_fd(o->fd, POLLOUT, o->timeout_ms);
				if (rc)
					return rc;
				continue;
			}
			return -errno;
		}
		if (n == 0)
			return -EPIPE;
		p += n;
		len -= (size_t)n;
		o->bytes += (uint64_t)n;
	}
	return 0;
}

void sr_in_fd(struct sr_in *in, int fd, int timeout_ms)
{
	memset(in, 0, sizeof(*in));
	in->kind = SR_IO_FD;
	in->fd = fd;
	in->timeout_ms = timeout_ms;
}

void sr_in_mem(struct sr_in *in, const void *buf, size_t len)
{
	memset(in, 0, sizeof(*in));
	in->kind = SR_IO_MEM;
	in->fd = -1;
	in->buf = buf;
	in->len = buf ? len : 0;
}

/* The poll timeout of the next read: timeout_ms, shortened to what is left before the deadline. */
static int in_wait_ms(const struct sr_in *in)
{
	uint64_t t;
	int left;

	if (!in->deadline_ns)
		return in->timeout_ms;
	t = now_ns();
	if (t >= in->deadline_ns)
		return 0;
	left = (int)((in->deadline_ns - t + 999999) / 1000000);
	return in->timeout_ms < 0 || left < in->timeout_ms ? left : in->timeout_ms;
}

ssize_t sr_in_read(struct sr_in *in, void *buf, size_t len)
{
	uint8_t *p = buf;
	size_t got = 0;
	int rc;

	if (in->kind == SR_IO_MEM) {
		size_t avail = in->len - in->pos;

		got = len < avail ? len : avail;
		if (got)
			memcpy(buf, in->buf + in->pos, got);
		in->pos += got;
		in->bytes += got;
		return (ssize_t)got;
	}
	while (got < len) {
		ssize_t n;

		if (in->deadline_ns && now_ns() >= in->deadline_ns)
			return -ETIMEDOUT;
		if (in->tls) {
			n = tls_link_recv(in->tls, p + got, len - got, in_wait_ms(in));
			if (n < 0)
				return (int)n;
			if (n == 0)
				break;
			got += (size_t)n;
			in->bytes += (uint64_t)n;
			continue;
		}
		if (in->timeout_ms >= 0 || in->deadline_ns) {
			rc = wait_fd(in->fd, POLLIN, in_wait_ms(in));
			if (rc)
				return rc;
		}
		n = read(in->fd, p + got, len - got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				rc = wait_fd(in->fd, POLLIN, in_wait_ms(in));
				if (rc)
					return rc;
				continue;
			}
			return -errno;
		}
		if (n == 0)
			break;
		got += (size_t)n;
		in->bytes += (uint64_t)n;
	}
	return (ssize_t)got;
}
