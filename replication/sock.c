/* sock.c — TCP endpoints for replication and migration: ADDR:PORT parsing, listen, bounded connect. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "replication/sock.h"
#include "common/errf.h"

int sock_parse(const char *s, struct sockaddr_storage *ss, socklen_t *len, char *err, size_t errlen)
{
	char host[256];
	const char *port;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai;
	char *end;
	long p;
	int rc;

	if (!s || !*s || strlen(s) >= sizeof(host))
		return errf(err, errlen, -EINVAL, "bad address '%s' (expected HOST:PORT or [IPv6]:PORT)",
			    s ? s : "");
	if (s[0] == '[') {
		const char *rb = strchr(s, ']');
		if (!rb || rb[1] != ':')
			return errf(err, errlen, -EINVAL, "bad address '%s' (expected [IPv6]:PORT)", s);
		memcpy(host, s + 1, (size_t)(rb - s - 1));
		host[rb - s - 1] = 0;
		port = rb + 2;
	} else {
		const char *c = strrchr(s, ':');
		if (!c || c == s || strchr(s, ':') != c)
			return errf(err, errlen, -EINVAL,
				    "bad address '%s' (expected HOST:PORT or [IPv6]:PORT)", s);
		memcpy(host, s, (size_t)(c - s));
		host[c - s] = 0;
		port = c + 1;
	}
	errno = 0;
	p = strtol(port, &end, 10);
	if (!*port || *end || errno || p < 1 || p > 65535)
		return errf(err, errlen, -EINVAL, "bad port in '%s' (1..65535)", s);
	rc = getaddrinfo(host, port, &hints, &ai);
	if (rc)
		return errf(err, errlen, -EINVAL, "cannot resolve '%s': %s", host, gai_strerror(rc));
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*len = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

const char *sock_str(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen)
{
	char h[INET6_ADDRSTRLEN] = "?";
	int port = 0;

	(void)len;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)sa;
		inet_ntop(AF_INET, &a->sin_addr, h, sizeof(h));
		port = ntohs(a->sin_port);
		snprintf(buf, buflen, "%s:%d", h, port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)sa;
		inet_ntop(AF_INET6, &a->sin6_addr, h, sizeof(h));
		port = ntohs(a->sin6_port);
		snprintf(buf, buflen, "[%s]:%d", h, port);
	} else {
		snprintf(buf, buflen, "?");
	}
	return buf;
}

void sock_tune(int fd, int timeout_ms)
{
	int one = 1, idle = 1, intvl = 1, cnt = 3;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	if (timeout_ms > 0) {
		unsigned t = (unsigned)timeout_ms;
		setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &t, sizeof(t));
	}
}

/* Parse `s` and make a non-blocking, close-on-exec TCP socket of its family. fd or -errno (err). */
static int open_socket(const char *s, struct sockaddr_storage *ss, socklen_t *len, char *err, size_t errlen)
{
	int fd, rc = sock_parse(s, ss, len, err, errlen);

	if (rc)
		return rc;
	fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		rc = -errno;
		return errf(err, errlen, rc, "socket: %s", strerror(errno));
	}
	return fd;
}

int sock_listen(const char *s, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd, one = 1, rc;

	fd = open_socket(s, &ss, &len, err, errlen);
	if (fd < 0)
		return fd;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 4) < 0) {
		rc = errf(err, errlen, -errno, "cannot listen on %s: %s", s, strerror(errno));
		close(fd);
		return rc;
	}
	return fd;
}

int sock_connect(const char *s, int timeout_ms, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd, rc, soerr = 0;
	socklen_t sl = sizeof(soerr);
	struct pollfd p;

	fd = open_socket(s, &ss, &len, err, errlen);
	if (fd < 0)
		return fd;
	if (connect(fd, (struct sockaddr *)&ss, len) < 0 && errno != EINPROGRESS) {
		rc = -errno;
		goto err;
	}
	p = (struct pollfd){.fd = fd, .events = POLLOUT};
	rc = poll(&p, 1, timeout_ms);
	if (rc == 0) {
		rc = -ETIMEDOUT;
		goto err;
	}
	if (rc < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0) {
		rc = -errno;
		goto err;
	}
	if (soerr) {
		rc = -soerr;
		goto err;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	sock_tune(fd, timeout_ms);
	return fd;
err:
	errf(err, errlen, rc, "cannot connect to %s: %s", s, strerror(-rc));
	close(fd);
	return rc;
}

int sock_accept(int lfd, int timeout_ms)
{
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

	if (fd < 0)
		return -errno;
	sock_tune(fd, timeout_ms);
	return fd;
}
