/* ctl_client.c — the blocking control-plane client: one request line out, one reply line back (see
 * ctl_client.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "common/clock.h"
#include "tools/common/ctl_client.h"
#include "common/errf.h"

/* Wait for `events` on fd until deadline. 0, -ETIMEDOUT or -errno. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	struct pollfd pfd = {.fd = fd, .events = events};

	for (;;) {
		int64_t left = deadline - (int64_t)(now_ns() / 1000000);
		int n;

		if (left <= 0)
			return -ETIMEDOUT;
		n = poll(&pfd, 1, (int)left);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

/* What one call is talking to, for its error lines. */
struct call {
	const char *path;
	int fd, timeout_ms;
	int64_t deadline; /* ms, monotonic */
	char *err;
	size_t errlen;
};

/* A wait_fd failure as one line. Returns rc. */
static int wait_failed(const struct call *c, int rc)
{
	if (rc == -ETIMEDOUT)
		return errf(c->err, c->errlen, rc, "no reply from %s within %d ms", c->path, c->timeout_ms);
	return errf(c->err, c->errlen, rc, "poll on %s: %s", c->path, strerror(-rc));
}

/* A non-blocking connected socket in c->fd. 0 or -errno with one line. */
static int connect_ctl(struct call *c, const struct sockaddr_un *sa)
{
	int e;

	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return errf(c->err, c->errlen, -errno, "socket: %s", strerror(errno));
	if (connect(c->fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0)
		return 0;
	e = errno;
	if (e == ENOENT)
		return errf(c->err, c->errlen, -e, "no VM control socket at %s (is the VM running?)",
			    c->path);
	if (e == ECONNREFUSED)
		return errf(c->err, c->errlen, -e,
			    "nothing listening on %s (stale socket; is the VM running?)", c->path);
	if (e == EAGAIN)
		return errf(c->err, c->errlen, -e, "VM control socket %s is busy (listen queue full)",
			    c->path);
	return errf(c->err, c->errlen, -e, "cannot connect to %s: %s", c->path, strerror(e));
}

/* Send str (len bytes) and a '\n' (separately: str belongs to the request). 0 or -errno. */
static int send_line(const struct call *c, const char *str, size_t len)
{
	for (size_t sent = 0; sent < len + 1;) {
		const char *p = sent < len ? str + sent : "\n";
		size_t n = sent < len ? len - sent : 1;
		ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		int rc;

		if (w > 0) {
			sent += (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return errf(c->err, c->errlen, -errno, "VM closed the control connection %s: %s",
				    c->path, strerror(errno));
		rc = wait_fd(c->fd, POLLOUT, c->deadline);
		if (rc)
			return wait_failed(c, rc);
	}
	return 0;
}

/* Read up to and including the first '\n' into *buf (malloc'd, caller frees even on error);
 * *linelen is the line's length without it. 0 or -errno. */
static int recv_line(const struct call *c, char **buf, size_t *linelen)
{
	size_t off = 0, cap = 0;
	char *nl = NULL;

	while (!nl) {
		ssize_t r;
		int rc;

		if (off == cap) {
			char *p;

			if (cap >= CTL_MAX_OUT)
				return errf(c->err, c->errlen, -EPROTO, "reply from %s is too large",
					    c->path);
			cap = cap ? cap * 2 : 4096;
			p = realloc(*buf, cap);
			if (!p)
				return errf(c->err, c->errlen, -ENOMEM, "out of memory");
			*buf = p;
		}
		r = recv(c->fd, *buf + off, cap - off, MSG_DONTWAIT);
		if (r > 0) {
			nl = memchr(*buf + off, '\n', (size_t)r);
			off += (size_t)r;
			continue;
		}
		if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
			return errf(c->err, c->errlen, -EPROTO,
				    "VM closed the control connection %s without replying", c->path);
		rc = wait_fd(c->fd, POLLIN, c->deadline);
		if (rc)
			return wait_failed(c, rc);
	}
	*linelen = (size_t)(nl - *buf);
	return 0;
}

/* The reply line as an object with a boolean "ok" (see ctl_call for what is returned). */
static int parse_reply(const struct call *c, const char *line, size_t len, struct json_object **reply)
{
	struct json_object *obj = NULL, *ok, *e;
	int rc;

	rc = ctl_parse_json(line, len, &obj, c->err, c->errlen);
	if (rc || !json_object_is_type(obj, json_type_object) || !json_object_object_get_ex(obj, "ok", &ok) ||
	    !json_object_is_type(ok, json_type_boolean)) {
		json_object_put(obj);
		return errf(c->err, c->errlen, -EPROTO, "malformed reply from %s", c->path);
	}
	*reply = obj;
	if (json_object_get_boolean(ok))
		return 0;
	if (json_object_object_get_ex(obj, "error", &e) && json_object_is_type(e, json_type_string))
		return errf(c->err, c->errlen, -EREMOTEIO, "%s", json_object_get_string(e));
	return errf(c->err, c->errlen, -EREMOTEIO, "VM reported an error without a message");
}

enum ctl_outcome ctl_outcome(int rc, struct json_object *reply)
{
	struct json_object *r;

	if (rc == 0)
		return CTL_OUTCOME_OK;
	if (rc == -ENOENT || rc == -ECONNREFUSED)
		return CTL_OUTCOME_NOT_RUNNING;
	if (rc == -EREMOTEIO && reply && json_object_object_get_ex(reply, "refused", &r) &&
	    json_object_is_type(r, json_type_boolean) && json_object_get_boolean(r))
		return CTL_OUTCOME_REFUSED;
	return CTL_OUTCOME_FAILED;
}

/* One byte at a time up to '\n' (nothing after it is consumed). 0 or -errno. */
static int recv_line_exact(const struct call *c, char **buf, size_t *linelen)
{
	size_t off = 0;

	*buf = malloc(CTL_MAX_LINE + 1);
	if (!*buf)
		return errf(c->err, c->errlen, -ENOMEM, "out of memory");
	for (;;) {
		ssize_t r = recv(c->fd, *buf + off, 1, MSG_DONTWAIT);
		int rc;

		if (r == 1) {
			if ((*buf)[off] == '\n')
				break;
			if (++off > CTL_MAX_LINE)
				return errf(c->err, c->errlen, -EPROTO, "reply from %s is too large",
					    c->path);
			continue;
		}
		if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
			return errf(c->err, c->errlen, -EPROTO,
				    "VM closed the control connection %s without replying", c->path);
		rc = wait_fd(c->fd, POLLIN, c->deadline);
		if (rc)
			return wait_failed(c, rc);
	}
	*linelen = off;
	return 0;
}

static int call(const char *path, struct json_object *req, struct json_object **reply, int timeout_ms,
		int *keep_fd, char *err, size_t errlen);

int ctl_call(const char *path, struct json_object *req, struct json_object **reply, int timeout_ms, char *err,
	     size_t errlen)
{
	return call(path, req, reply, timeout_ms, NULL, err, errlen);
}

int ctl_call_stream(const char *path, struct json_object *req, struct json_object **reply, int timeout_ms,
		    int *fd, char *err, size_t errlen)
{
	return call(path, req, reply, timeout_ms, fd, err, errlen);
}

static int call(const char *path, struct json_object *req, struct json_object **reply, int timeout_ms,
		int *keep_fd, char *err, size_t errlen)
{
	struct call c = {.path = path,
			 .fd = -1,
			 .timeout_ms = timeout_ms,
			 .deadline = (int64_t)(now_ns() / 1000000) + (timeout_ms > 0 ? timeout_ms : 1),
			 .err = err,
			 .errlen = errlen};
	struct sockaddr_un sa;
	const char *str;
	char *buf = NULL;
	size_t len, linelen = 0;
	int rc;

	*reply = NULL;
	if (keep_fd)
		*keep_fd = -1;
	rc = ctl_sockaddr(path, &sa, err, errlen);
	if (rc)
		return rc;
	if (!req || !json_object_is_type(req, json_type_object))
		return errf(err, errlen, -EINVAL, "control request must be a JSON object");
	str = json_object_to_json_string_ext(req, CTL_JSON_FLAGS);
	len = str ? strlen(str) : 0;
	if (!str || len > CTL_MAX_LINE)
		return errf(err, errlen, str ? -E2BIG : -ENOMEM, str ? "request too large" : "out of memory");
	rc = connect_ctl(&c, &sa);
	if (!rc)
		rc = send_line(&c, str, len);
	if (!rc)
		rc = keep_fd ? recv_line_exact(&c, &buf, &linelen) : recv_line(&c, &buf, &linelen);
	if (!rc)
		rc = parse_reply(&c, buf, linelen, reply);
	free(buf);
	if (!rc && keep_fd) {
		int fl = fcntl(c.fd, F_GETFL);

		if (fl >= 0)
			fcntl(c.fd, F_SETFL, fl & ~O_NONBLOCK);
		*keep_fd = c.fd;
		return 0;
	}
	if (c.fd >= 0)
		close(c.fd);
	return rc;
}
