/* control.c — the control-plane server: newline-delimited JSON requests on a unix socket, served from a libev loop. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <ev.h>
#include <json-c/json.h>

#include "vmm/control.h"
#include "common/errf.h"
#include "common/log.h"

#define CTL_IN_CAP (CTL_MAX_LINE + 1) /* a maximal line plus its '\n' */
#define CTL_MAX_CLIENTS 64

const char ctl_defer_marker;

/* Locking: everything is loop-thread-only except the fields marked [lock], guarded by server->lock,
 * which ctl_reply()/ctl_conn_alive()/reference drops may touch from other threads. */
struct ctl_conn {
	struct ctl_server *s;
	struct ctl_conn *prev, *next; /* in s->conns while open */
	int fd; /* -1 once closed */
	ev_io rio, wio;
	char *in;
	size_t in_len;
	char *out;
	size_t out_off, out_len, out_cap;
	bool waiting; /* a deferred reply is outstanding: further requests wait */
	bool held; /* ctl_current_conn() was called during the current dispatch */
	bool closing; /* close once the output is flushed */
	bool eof; /* client half-closed: close once replies are out */
	ctl_handover_fn handover; /* hand the socket over once the reply is out (ctl_handover) */
	void *handover_opaque;
	int refs; /* [lock] 1 while open + 1 per holder */
	bool closed; /* [lock] */
	bool has_pending; /* [lock] ctl_reply() delivered, loop not yet written */
	struct json_object *pending; /* [lock] */
};

struct ctl_server {
	struct ev_loop *loop;
	ev_io lio;
	ev_async async;
	int lfd;
	int nr_conns;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	ctl_handler fn;
	void *opaque;
	long group; /* besides root and this process's uid, members of this gid may command (-1: none) */
	struct ctl_conn *conns;
	struct ctl_conn *cur; /* conn being dispatched */
	pthread_mutex_t lock;
	int refs; /* [lock] 1 for the owner + 1 per conn not yet freed */
	bool stopped; /* [lock] */
};

/* ---- references -------------------------------------------------------------------------------------- */

static void server_put(struct ctl_server *s)
{
	bool last;

	pthread_mutex_lock(&s->lock);
	last = --s->refs == 0;
	pthread_mutex_unlock(&s->lock);
	if (last) {
		pthread_mutex_destroy(&s->lock);
		free(s);
	}
}

static void conn_get(struct ctl_conn *c)
{
	pthread_mutex_lock(&c->s->lock);
	c->refs++;
	pthread_mutex_unlock(&c->s->lock);
}

static void conn_put(struct ctl_conn *c)
{
	struct ctl_server *s = c->s;
	struct json_object *pending;
	bool last;

	pthread_mutex_lock(&s->lock);
	last = --c->refs == 0;
	pthread_mutex_unlock(&s->lock);
	if (!last)
		return;
	pending = c->pending;
	free(c);
	json_object_put(pending);
	server_put(s);
}

/* ---- server connections -------------------------------------------------------------------------- */

/* Unlink c from its server; its socket is closed, or given to the handover function. */
static void conn_end(struct ctl_conn *c, bool handover)
{
	struct ctl_server *s = c->s;
	struct json_object *pending;
	int fd = c->fd;

	if (c->fd < 0)
		return;
	ev_io_stop(s->loop, &c->rio);
	ev_io_stop(s->loop, &c->wio);
	c->fd = -1;
	if (handover)
		c->handover(c->handover_opaque, fd);
	else
		close(fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->nr_conns--;
	free(c->in);
	free(c->out);
	c->in = c->out = NULL;
	pthread_mutex_lock(&s->lock);
	c->closed = true;
	pending = c->pending;
	c->pending = NULL;
	c->has_pending = false;
	pthread_mutex_unlock(&s->lock);
	json_object_put(pending);
	conn_put(c);
}

static void conn_close(struct ctl_conn *c)
{
	conn_end(c, false);
}

/* Write what we can; close if finished and asked to. */
static void conn_flush(struct ctl_conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			ev_io_start(c->s->loop, &c->wio);
			return;
		}
		if (n <= 0) {
			conn_close(c);
			return;
		}
		c->out_off += (size_t)n;
	}
	c->out_off = c->out_len = 0;
	ev_io_stop(c->s->loop, &c->wio);
	if (c->closing)
		conn_close(c);
	else if (c->handover)
		conn_end(c, true);
}

/* A half-closed client is closed once nothing is left to answer or send. */
static void conn_maybe_finish(struct ctl_conn *c)
{
	if (c->fd >= 0 && c->eof && !c->waiting && c->out_len == 0)
		conn_close(c);
}

/* Queue one reply line (reply consumed; NULL = out of memory) and try to send it. */
static void conn_send(struct ctl_conn *c, struct json_object *reply)
{
	struct json_object *r = reply, *val;
	const char *str;
	size_t len, need;

	if (r && !json_object_is_type(r, json_type_object)) {
		json_object_put(r);
		r = ctl_error("internal error: handler returned a non-object");
	} else if (r && !json_object_object_get_ex(r, "ok", NULL)) {
		r = ctl_ok(); /* "ok" first, then the handler's keys */
		if (r) {
			json_object_object_foreach(reply, key, v)
			{
				val = json_object_get(v);
				json_object_object_add(r, key, val);
			}
		}
		json_object_put(reply);
	}
	str = r ? json_object_to_json_string_ext(r, CTL_JSON_FLAGS) : NULL;
	if (!str)
		str = "{\"ok\":false,\"error\":\"out of memory\"}";
	len = strlen(str);
	if (c->out_off) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	need = c->out_len + len + 1;
	if (need > CTL_MAX_OUT) {
		json_object_put(r); /* client does not read its replies: drop it */
		conn_close(c);
		return;
	}
	if (need > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		char *p;

		while (cap < need)
			cap *= 2;
		if (cap > CTL_MAX_OUT)
			cap = CTL_MAX_OUT;
		p = realloc(c->out, cap);
		if (!p) {
			json_object_put(r);
			conn_close(c);
			return;
		}
		c->out = p;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, str, len);
	c->out[c->out_len + len] = '\n';
	c->out_len += len + 1;
	json_object_put(r);
	conn_flush(c);
}

static void conn_too_large(struct ctl_conn *c)
{
	c->closing = true;
	c->in_len = 0;
	ev_io_stop(c->s->loop, &c->rio);
	conn_send(c, ctl_error("request too large"));
}

/* Run one request line through the parser and the handler. The caller holds a conn reference. */
static void conn_dispatch(struct ctl_conn *c, const char *line, size_t len)
{
	struct ctl_server *s = c->s;
	struct json_object *req, *r;
	const char *cmd;
	char err[256];
	int rc;

	rc = ctl_parse_request(line, len, &req, &cmd, err, sizeof(err));
	if (rc) {
		if (rc == -E2BIG)
			conn_too_large(c);
		else
			conn_send(c, ctl_error("%s", err));
		return;
	}
	c->held = false;
	s->cur = c;
	r = s->fn(s->opaque, cmd, req);
	s->cur = NULL;
	if (c->fd < 0) { /* closed from the handler (server stopped) */
		if (r != CTL_DEFER)
			json_object_put(r);
		json_object_put(req);
		return;
	}
	if (r == CTL_DEFER && c->held)
		c->waiting = true;
	else if (r == CTL_DEFER)
		conn_send(c, ctl_error("internal error: '%s' deferred its reply without a connection", cmd));
	else if (!r)
		conn_send(c, ctl_error("unknown command '%s'", cmd));
	else
		conn_send(c, r);
	json_object_put(req);
}

/* Dispatch every complete buffered line unless a deferred reply is outstanding. Caller holds a ref. */
static void conn_process(struct ctl_conn *c)
{
	size_t off = 0, next;

	while (c->fd >= 0 && !c->waiting && !c->closing) {
		char *nl = memchr(c->in + off, '\n', c->in_len - off);

		if (!nl) {
			if (c->in_len - off >= CTL_IN_CAP)
				conn_too_large(c);
			break;
		}
		next = (size_t)(nl - c->in) + 1;
		conn_dispatch(c, c->in + off, next - off - 1);
		if (c->fd < 0)
			return;
		off = next;
	}
	if (off && !c->closing) {
		memmove(c->in, c->in + off, c->in_len - off);
		c->in_len -= off;
	}
	if (!c->eof && !c->closing && c->in_len < CTL_IN_CAP)
		ev_io_start(c->s->loop, &c->rio);
	conn_maybe_finish(c);
}

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct ctl_conn *c = w->data;
	struct pollfd pfd;
	ssize_t n;

	(void)revents;
	if (c->in_len >= CTL_IN_CAP) { /* full while waiting for a deferred reply */
		ev_io_stop(loop, w);
		return;
	}
	n = recv(c->fd, c->in + c->in_len, CTL_IN_CAP - c->in_len, MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	conn_get(c);
	if (n < 0) {
		conn_close(c);
	} else if (n == 0) {
		/* Half-close (a reply is still wanted) or full close (peer gone: POLLHUP)? */
		c->eof = true;
		ev_io_stop(loop, w);
		pfd.fd = c->fd;
		pfd.events = POLLOUT;
		if (poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLHUP | POLLERR)))
			conn_close(c);
		else
			conn_process(c);
	} else {
		c->in_len += (size_t)n;
		if (!c->waiting)
			conn_process(c);
		else if (c->in_len >= CTL_IN_CAP)
			ev_io_stop(loop, w);
	}
	conn_put(c); /* may free c and the server: touch nothing after */
}

static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct ctl_conn *c = w->data;

	(void)loop;
	(void)revents;
	conn_get(c);
	conn_flush(c);
	conn_maybe_finish(c);
	conn_put(c);
}

/* Is gid among the supplementary groups of process pid (/proc/PID/status "Groups:")? */
static bool pid_in_group(pid_t pid, gid_t gid)
{
	char path[64], line[1024];
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		if (strncmp(line, "Groups:", 7))
			continue;
		for (char *p = line + 7, *end; *p; p = end) {
			unsigned long g = strtoul(p, &end, 10);
			if (end == p)
				break;
			found = g == gid;
		}
		break;
	}
	fclose(f);
	return found;
}

/* SO_PEERCRED: root, this process's own uid, or (with a control group) a member of it. The socket
 * file's mode (0660) keeps others out already; this holds when the file was made reachable anyway. */
static bool peer_allowed(struct ctl_server *s, int fd)
{
	struct ucred uc;
	socklen_t len = sizeof(uc);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0)
		return false;
	if (uc.uid == 0 || uc.uid == geteuid())
		return true;
	if (s->group >= 0 && (uc.gid == (gid_t)s->group || pid_in_group(uc.pid, (gid_t)s->group)))
		return true;
	log_warn("vmm", NULL,
		 "control socket %s: refused uid %u gid %u (not root, not the VM's user, not in the control "
		 "group)",
		 s->path, (unsigned)uc.uid, (unsigned)uc.gid);
	return false;
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct ctl_server *s = w->data;
	struct ctl_conn *c;
	int fd;

	(void)revents;
	fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return; /* EAGAIN, or a transient error: the watcher fires again */
	if (!peer_allowed(s, fd)) {
		static const char no[] = "{\"ok\":false,\"error\":\"permission denied: only root, the VM's "
					 "user or the control group may use this socket\"}\n";

		if (send(fd, no, sizeof(no) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
			/* dropped either way */
		}
		close(fd);
		return;
	}
	if (s->nr_conns >= CTL_MAX_CLIENTS) {
		static const char busy[] = "{\"ok\":false,\"error\":\"too many control clients\"}\n";

		if (send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
			/* nothing to do: the client is dropped either way */
		}
		close(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (c)
		c->in = malloc(CTL_IN_CAP);
	if (!c || !c->in) {
		free(c);
		close(fd);
		return;
	}
	c->s = s;
	c->fd = fd;
	c->refs = 1;
	ev_io_init(&c->rio, conn_read_cb, fd, EV_READ);
	ev_io_init(&c->wio, conn_write_cb, fd, EV_WRITE);
	c->rio.data = c->wio.data = c;
	pthread_mutex_lock(&s->lock);
	s->refs++;
	pthread_mutex_unlock(&s->lock);
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->nr_conns++;
	ev_io_start(loop, &c->rio);
}

/* Deliver replies handed over by ctl_reply(). */
static void async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct ctl_server *s = w->data;
	struct ctl_conn *c, *next;

	(void)loop;
	(void)revents;
	for (c = s->conns; c; c = next) {
		struct json_object *r;
		bool has, stopped;

		next = c->next;
		pthread_mutex_lock(&s->lock);
		has = c->has_pending;
		r = c->pending;
		c->has_pending = false;
		c->pending = NULL;
		pthread_mutex_unlock(&s->lock);
		if (!has)
			continue;
		conn_get(c);
		c->waiting = false;
		conn_send(c, r ? r : ctl_error("internal error: empty deferred reply"));
		if (c->fd >= 0)
			conn_process(c); /* requests that queued up meanwhile */
		pthread_mutex_lock(&s->lock);
		stopped = s->stopped;
		pthread_mutex_unlock(&s->lock);
		if (stopped) { /* a handler stopped the server: the list is gone */
			conn_put(c);
			return;
		}
		next = c->next; /* c may have closed; its successor is still linked */
		if (c->fd < 0) {
			conn_put(c);
			/* restart: the list changed under us; already-served conns have no pending reply */
			next = s->conns;
			continue;
		}
		conn_put(c);
	}
}

/* ---- server lifecycle ------------------------------------------------------------------------------ */

static int mkdir_parents(const char *path, char *err, size_t errlen)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char *p;

	snprintf(dir, sizeof(dir), "%s", path);
	p = strrchr(dir, '/');
	if (!p || p == dir)
		return 0;
	*p = '\0';
	for (p = dir + 1;; p++) {
		char saved = *p;

		if (saved != '/' && saved != '\0')
			continue;
		*p = '\0';
		if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
			int e = errno;

			return errf(err, errlen, -e, "cannot create directory %s: %s", dir, strerror(e));
		}
		*p = saved;
		if (!saved)
			return 0;
	}
}

/* Path exists: refuse if not a socket or live; unlink if stale. */
static int take_over_path(const char *path, const struct sockaddr_un *sa, char *err, size_t errlen)
{
	struct stat st;
	int fd, rc, e;

	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		e = errno;
		return errf(err, errlen, -e, "cannot stat control socket %s: %s", path, strerror(e));
	}
	if (!S_ISSOCK(st.st_mode))
		return errf(err, errlen, -EEXIST, "%s exists and is not a socket (refusing to replace it)",
			    path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		e = errno;
		return errf(err, errlen, -e, "socket: %s", strerror(e));
	}
	rc = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
	e = errno;
	close(fd);
	if (rc == 0 || e == EAGAIN || e == EINPROGRESS)
		return errf(err, errlen, -EADDRINUSE, "control socket %s is in use by a running VM", path);
	if (e != ECONNREFUSED)
		return errf(err, errlen, -e, "cannot probe existing control socket %s: %s", path,
			    strerror(e));
	if (unlink(path) < 0 && errno != ENOENT) {
		e = errno;
		return errf(err, errlen, -e, "cannot remove stale control socket %s: %s", path, strerror(e));
	}
	return 0;
}

int ctl_server_start(struct ctl_server **out, struct ev_loop *loop, const char *path, long group,
		     ctl_handler fn, void *opaque, char *err, size_t errlen)
{
	struct ctl_server *s = NULL;
	struct sockaddr_un sa;
	int fd = -1, rc, e;

	*out = NULL;
	if (!loop || !fn)
		return errf(err, errlen, -EINVAL, "ctl_server_start: no loop or handler");
	rc = ctl_sockaddr(path, &sa, err, errlen);
	if (rc)
		return rc;
	rc = mkdir_parents(sa.sun_path, err, errlen);
	if (rc)
		return rc;
	rc = take_over_path(sa.sun_path, &sa, err, errlen);
	if (rc)
		return rc;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = errf(err, errlen, -errno, "socket: %s", strerror(errno));
		goto err;
	}
	/* The file is born 0660 (umask, not a chmod after bind that would follow a symlink planted in
	 * between) and, with a control group, owned by that group (the effective gid at bind). Set-up
	 * time: no other thread of this process creates files meanwhile. */
	mode_t old_mask = umask(0117);
	gid_t old_egid = getegid();
	if (group >= 0 && setegid((gid_t)group) < 0) {
		umask(old_mask);
		rc = errf(err, errlen, -errno, "control group %ld: %s", group, strerror(errno));
		goto err;
	}
	rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	e = errno;
	if (group >= 0 && setegid(old_egid) < 0)
		abort(); /* cannot happen for root (who could set it); never continue with a foreign gid */
	umask(old_mask);
	if (rc < 0) {
		if (e == EADDRINUSE)
			rc = errf(err, errlen, -e, "control socket %s is in use by a running VM",
				  sa.sun_path);
		else
			rc = errf(err, errlen, -e, "cannot bind control socket %s: %s", sa.sun_path,
				  strerror(e));
		goto err;
	}
	if (listen(fd, 16) < 0) {
		rc = errf(err, errlen, -errno, "cannot listen on control socket %s: %s", sa.sun_path,
			  strerror(errno));
		unlink(sa.sun_path);
		goto err;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		rc = errf(err, errlen, -ENOMEM, "out of memory");
		unlink(sa.sun_path);
		goto err;
	}
	pthread_mutex_init(&s->lock, NULL);
	s->refs = 1;
	s->loop = loop;
	s->lfd = fd;
	s->fn = fn;
	s->opaque = opaque;
	s->group = group;
	memcpy(s->path, sa.sun_path, sizeof(s->path));
	ev_io_init(&s->lio, accept_cb, fd, EV_READ);
	s->lio.data = s;
	ev_io_start(loop, &s->lio);
	ev_async_init(&s->async, async_cb);
	s->async.data = s;
	ev_async_start(loop, &s->async);
	*out = s;
	return 0;
err:
	if (fd >= 0)
		close(fd);
	return rc;
}

void ctl_server_stop(struct ctl_server *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->stopped = true;
	pthread_mutex_unlock(&s->lock);
	ev_io_stop(s->loop, &s->lio);
	ev_async_stop(s->loop, &s->async);
	close(s->lfd);
	unlink(s->path);
	while (s->conns)
		conn_close(s->conns);
	server_put(s);
}

const char *ctl_server_path(const struct ctl_server *s)
{
	return s->path;
}

struct ctl_conn *ctl_current_conn(struct ctl_server *s)
{
	if (!s || !s->cur)
		return NULL;
	s->cur->held = true;
	conn_get(s->cur);
	return s->cur;
}

int ctl_reply(struct ctl_conn *c, struct json_object *reply)
{
	struct ctl_server *s;
	int rc = 0;

	if (!c) {
		json_object_put(reply);
		return -EINVAL;
	}
	s = c->s;
	pthread_mutex_lock(&s->lock);
	if (c->closed || s->stopped) {
		rc = -ENOTCONN;
	} else if (c->has_pending) {
		rc = -EALREADY;
	} else {
		c->pending = reply;
		c->has_pending = true;
		reply = NULL;
		ev_async_send(s->loop, &s->async);
	}
	pthread_mutex_unlock(&s->lock);
	json_object_put(reply);
	conn_put(c);
	return rc;
}

int ctl_handover(struct ctl_server *s, ctl_handover_fn fn, void *opaque)
{
	if (!s || !s->cur || !fn)
		return -EINVAL;
	s->cur->handover = fn;
	s->cur->handover_opaque = opaque;
	return 0;
}

bool ctl_conn_alive(struct ctl_conn *c)
{
	bool alive;

	if (!c)
		return false;
	pthread_mutex_lock(&c->s->lock);
	alive = !c->closed && !c->s->stopped;
	pthread_mutex_unlock(&c->s->lock);
	return alive;
}
