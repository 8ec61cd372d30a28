/* ctl_client.c — the blocking control-plane client: one request line out, one reply line back (see ctl_client.h). */
#include <errno.h>
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

/* Wait for `events` on fd until deadline. 0, -ETIMEDOUT or -errno. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	struct pollfd pfd = { .fd = fd, .events = events };

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

int ctl_call(const char *path, struct json_object *req, struct json_object **reply, int timeout_ms, char *err,
	     size_t errlen)
{
	struct sockaddr_un sa;
	struct json_object *obj = NULL, *ok, *e;
	const char *str;
	char *buf = NULL, *nl = NULL;
	size_t len, off = 0, cap = 0;
	int64_t deadline = (int64_t)(now_ns() / 1000000) + (timeout_ms > 0 ? timeout_ms : 1);
	int fd = -1, rc;

	*reply = NULL;
	rc = ctl_sockaddr(path, &sa, err, errlen);
	if (rc)
		return rc;
	if (!req || !json_object_is_type(req, json_type_object)) {
		snprintf(err, errlen, "control request must be a JSON object");
		return -EINVAL;
	}
	str = json_object_to_json_string_ext(req, CTL_JSON_FLAGS);
	len = str ? strlen(str) : 0;
	if (!str || len > CTL_MAX_LINE) {
		snprintf(err, errlen, str ? "request too large" : "out of memory");
		return str ? -E2BIG : -ENOMEM;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "socket: %s", strerror(-rc));
		return rc;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		rc = -errno;
		if (rc == -ENOENT)
			snprintf(err, errlen, "no VM control socket at %s (is the VM running?)", path);
		else if (rc == -ECONNREFUSED)
			snprintf(err, errlen, "nothing listening on %s (stale socket; is the VM running?)", path);
		else if (rc == -EAGAIN)
			snprintf(err, errlen, "VM control socket %s is busy (listen queue full)", path);
		else
			snprintf(err, errlen, "cannot connect to %s: %s", path, strerror(-rc));
		goto out;
	}
	/* Send the line (the '\n' separately: str belongs to req). */
	for (size_t sent = 0; sent < len + 1;) {
		const char *p = sent < len ? str + sent : "\n";
		size_t n = sent < len ? len - sent : 1;
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w > 0) {
			sent += (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			rc = -errno;
			snprintf(err, errlen, "VM closed the control connection %s: %s", path, strerror(-rc));
			goto out;
		}
		rc = wait_fd(fd, POLLOUT, deadline);
		if (rc)
			goto timeout;
	}
	/* Read one line. */
	while (!nl) {
		ssize_t r;

		if (off == cap) {
			char *p;

			if (cap >= CTL_MAX_OUT) {
				rc = -EPROTO;
				snprintf(err, errlen, "reply from %s is too large", path);
				goto out;
			}
			cap = cap ? cap * 2 : 4096;
			p = realloc(buf, cap);
			if (!p) {
				rc = -ENOMEM;
				snprintf(err, errlen, "out of memory");
				goto out;
			}
			buf = p;
		}
		r = recv(fd, buf + off, cap - off, MSG_DONTWAIT);
		if (r > 0) {
			nl = memchr(buf + off, '\n', (size_t)r);
			off += (size_t)r;
			continue;
		}
		if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
			rc = -EPROTO;
			snprintf(err, errlen, "VM closed the control connection %s without replying", path);
			goto out;
		}
		rc = wait_fd(fd, POLLIN, deadline);
		if (rc)
			goto timeout;
	}
	rc = ctl_parse_json(buf, (size_t)(nl - buf), &obj, err, errlen);
	if (rc || !json_object_is_type(obj, json_type_object) || !json_object_object_get_ex(obj, "ok", &ok) ||
	    !json_object_is_type(ok, json_type_boolean)) {
		json_object_put(obj);
		rc = -EPROTO;
		snprintf(err, errlen, "malformed reply from %s", path);
		goto out;
	}
	*reply = obj;
	rc = 0;
	if (!json_object_get_boolean(ok)) {
		rc = -EREMOTEIO;
		if (json_object_object_get_ex(obj, "error", &e) && json_object_is_type(e, json_type_string))
			snprintf(err, errlen, "%s", json_object_get_string(e));
		else
			snprintf(err, errlen, "VM reported an error without a message");
	}
	goto out;
timeout:
	if (rc == -ETIMEDOUT)
		snprintf(err, errlen, "no reply from %s within %d ms", path, timeout_ms);
	else
		snprintf(err, errlen, "poll on %s: %s", path, strerror(-rc));
out:
	free(buf);
	close(fd);
	return rc;
}
