/* test_control.c — control plane: request parser, and a real libev server driven against ctl_call and raw sockets. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <ev.h>
#include <json-c/json.h>

#include "tools/common/ctl_client.h"

/* ---- parser --------------------------------------------------------------------------------------- */

static int parse(const char *s, const char **cmd, char *err)
{
	struct json_object *req;
	int rc = ctl_parse_request(s, strlen(s), &req, cmd, err, 256);

	if (rc == 0)
		assert_non_null(req);
	else
		assert_null(req);
	json_object_put(req);
	return rc;
}

static void test_parse_valid(void **state)
{
	struct json_object *req;
	const char *cmd;
	char err[256];

	(void)state;
	assert_int_equal(ctl_parse_request("{\"cmd\":\"status\",\"x\":1}", 22, &req, &cmd, err, sizeof(err)),
			 0);
	assert_string_equal(cmd, "status");
	assert_int_equal(json_object_get_int(json_object_object_get(req, "x")), 1);
	json_object_put(req);
	/* trailing \r and whitespace; not NUL-terminated (length excludes the garbage after) */
	assert_int_equal(ctl_parse_request("  {\"cmd\":\"pause\"} \r#junk", 19, &req, &cmd, err, sizeof(err)),
			 0);
	assert_string_equal(cmd, "pause");
	json_object_put(req);
}

static void test_parse_malformed(void **state)
{
	static const char *bad[] = {"{\"cmd\":",	 "{cmd:1}",	     "nul",
				    "{\"cmd\":\"a\"} x", "{\"cmd\":\"a\"}}", "}"};
	const char *cmd;
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(parse(bad[i], &cmd, err), -EINVAL);
		assert_null(cmd);
		assert_non_null(strstr(err, "malformed JSON"));
	}
	struct json_object *req;

	assert_int_equal(ctl_parse_request("{\"cmd\":\"a\0\"}", 12, &req, &cmd, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "NUL"));
}

static void test_parse_nonobject(void **state)
{
	static const char *bad[] = {"[1]", "\"status\"", "123", "null", "true"};
	const char *cmd;
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(parse(bad[i], &cmd, err), -EINVAL);
		assert_string_equal(err, "request must be a JSON object");
	}
}

static void test_parse_cmd(void **state)
{
	const char *cmd;
	char err[256], line[200];

	(void)state;
	assert_int_equal(parse("{}", &cmd, err), -EINVAL);
	assert_string_equal(err, "request has no \"cmd\" field");
	assert_int_equal(parse("{\"cmd\":1}", &cmd, err), -EINVAL);
	assert_string_equal(err, "\"cmd\" must be a string");
	assert_int_equal(parse("{\"cmd\":null}", &cmd, err), -EINVAL);
	assert_int_equal(parse("{\"cmd\":[\"x\"]}", &cmd, err), -EINVAL);
	assert_int_equal(parse("{\"cmd\":\"\"}", &cmd, err), -EINVAL);
	snprintf(line, sizeof(line), "{\"cmd\":\"%065d\"}", 0);
	assert_int_equal(parse(line, &cmd, err), -EINVAL);
	snprintf(line, sizeof(line), "{\"cmd\":\"%064d\"}", 0);
	assert_int_equal(parse(line, &cmd, err), 0);
}

static void test_parse_empty(void **state)
{
	struct json_object *req;
	const char *cmd;
	char err[256];

	(void)state;
	assert_int_equal(parse("", &cmd, err), -EINVAL);
	assert_string_equal(err, "empty request");
	assert_int_equal(parse("  \t\r", &cmd, err), -EINVAL);
	assert_int_equal(ctl_parse_request(NULL, 0, &req, &cmd, err, sizeof(err)), -EINVAL);
}

static void test_parse_oversized(void **state)
{
	char *line = malloc(CTL_MAX_LINE + 2);
	struct json_object *req;
	const char *cmd;
	char err[256];

	(void)state;
	assert_non_null(line);
	/* exactly CTL_MAX_LINE bytes: {"cmd":"x"} padded with spaces inside */
	memset(line, ' ', CTL_MAX_LINE + 1);
	memcpy(line, "{\"cmd\":\"x\"", 10);
	line[CTL_MAX_LINE - 1] = '}';
	assert_int_equal(ctl_parse_request(line, CTL_MAX_LINE, &req, &cmd, err, sizeof(err)), 0);
	json_object_put(req);
	assert_int_equal(ctl_parse_request(line, CTL_MAX_LINE + 1, &req, &cmd, err, sizeof(err)), -E2BIG);
	assert_string_equal(err, "request too large");
	free(line);
}

static void set_sun(struct sockaddr_un *sa, const char *path)
{
	assert_true(strlen(path) < sizeof(sa->sun_path));
	memcpy(sa->sun_path, path, strlen(path) + 1);
}

/* ---- server fixture: a libev loop on its own thread ------------------------------------------------ */

struct fx {
	char dir[64], path[160];
	struct ev_loop *loop;
	struct ctl_server *srv;
	pthread_t th;
	ev_async quit;
	ev_timer timer;
	struct ctl_conn *timer_conn;
	pthread_mutex_t m;
	struct ctl_conn *held; /* [m] from "defer_hold" */
	int stream_fd; /* [m] the socket "handover" was given, -1 before */
};

static void quit_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct fx *f = w->data;

	(void)revents;
	ctl_server_stop(f->srv);
	f->srv = NULL;
	ev_timer_stop(loop, &f->timer);
	ev_async_stop(loop, w);
	ev_break(loop, EVBREAK_ALL);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct fx *f = w->data;
	struct json_object *r = json_object_new_object();

	(void)loop;
	(void)revents;
	json_object_object_add(r, "deferred", json_object_new_string("timer"));
	assert_int_equal(ctl_reply(f->timer_conn, r), 0);
	f->timer_conn = NULL;
}

static void *late_reply(void *arg)
{
	struct json_object *r = json_object_new_object();

	usleep(20000);
	json_object_object_add(r, "deferred", json_object_new_string("thread"));
	ctl_reply(arg, r);
	return NULL;
}

/* Loop thread: the connection is ours now; greet through it. */
static void handover_cb(void *opaque, int fd)
{
	struct fx *f = opaque;
	static const char hello[] = "hello-stream\n";

	assert_int_equal(send(fd, hello, sizeof(hello) - 1, MSG_NOSIGNAL), (ssize_t)sizeof(hello) - 1);
	pthread_mutex_lock(&f->m);
	f->stream_fd = fd;
	pthread_mutex_unlock(&f->m);
}

static struct json_object *handler(void *opaque, const char *cmd, struct json_object *req)
{
	struct fx *f = opaque;
	struct json_object *r, *mem;
	pthread_t t;

	(void)req;
	if (!strcmp(cmd, "status")) {
		r = json_object_new_object();
		mem = json_object_new_object();
		json_object_object_add(r, "state", json_object_new_string("running"));
		json_object_object_add(r, "vcpus", json_object_new_int(2));
		json_object_object_add(mem, "size", json_object_new_int64(1 << 26));
		json_object_object_add(r, "mem", mem);
		return r;
	}
	if (!strcmp(cmd, "fail"))
		return ctl_error("it failed: %d", 42);
	if (!strcmp(cmd, "refuse"))
		return ctl_refused("not in this state: %d", 7);
	if (!strcmp(cmd, "handover")) {
		assert_int_equal(ctl_handover(f->srv, handover_cb, f), 0);
		r = json_object_new_object();
		json_object_object_add(r, "stream", json_object_new_boolean(1));
		return r;
	}
	if (!strcmp(cmd, "nonobj"))
		return json_object_new_int(1);
	if (!strcmp(cmd, "defer_bad"))
		return CTL_DEFER;
	if (!strcmp(cmd, "defer_timer")) {
		f->timer_conn = ctl_current_conn(f->srv);
		ev_timer_set(&f->timer, 0.02, 0);
		ev_timer_start(f->loop, &f->timer);
		return CTL_DEFER;
	}
	if (!strcmp(cmd, "defer_thread")) {
		struct ctl_conn *c = ctl_current_conn(f->srv);

		assert_int_equal(pthread_create(&t, NULL, late_reply, c), 0);
		pthread_detach(t);
		return CTL_DEFER;
	}
	if (!strcmp(cmd, "defer_now")) { /* reply from inside the handler, then defer */
		ctl_reply(ctl_current_conn(f->srv), json_object_new_object());
		return CTL_DEFER;
	}
	if (!strcmp(cmd, "defer_hold")) {
		pthread_mutex_lock(&f->m);
		f->held = ctl_current_conn(f->srv);
		pthread_mutex_unlock(&f->m);
		return CTL_DEFER;
	}
	if (!strcmp(cmd, "stop_server")) {
		ctl_server_stop(f->srv);
		f->srv = NULL;
		return ctl_ok();
	}
	return NULL;
}

static void *loop_thread(void *arg)
{
	struct fx *f = arg;

	ev_run(f->loop, 0);
	return NULL;
}

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char err[256];
	int rc;

	snprintf(f->dir, sizeof(f->dir), "/tmp/doppel-ctl-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/run/doppel/vm1.sock", f->dir); /* parents get created */
	f->loop = ev_loop_new(EVFLAG_AUTO);
	pthread_mutex_init(&f->m, NULL);
	ev_async_init(&f->quit, quit_cb);
	f->quit.data = f;
	ev_async_start(f->loop, &f->quit);
	ev_timer_init(&f->timer, timer_cb, 0.02, 0);
	f->timer.data = f;
	if (*state) { /* a test asked for a stale socket file first */
		char dir[200];
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		int fd = socket(AF_UNIX, SOCK_STREAM, 0);

		snprintf(dir, sizeof(dir), "%s/run", f->dir);
		mkdir(dir, 0755);
		snprintf(dir, sizeof(dir), "%s/run/doppel", f->dir);
		mkdir(dir, 0755);
		set_sun(&sa, f->path);
		assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
		close(fd); /* the file stays: a dead VM's socket */
	}
	rc = ctl_server_start(&f->srv, f->loop, f->path, -1, handler, f, err, sizeof(err));
	if (rc)
		fprintf(stderr, "ctl_server_start: %s\n", err);
	assert_int_equal(rc, 0);
	assert_string_equal(ctl_server_path(f->srv), f->path);
	assert_int_equal(pthread_create(&f->th, NULL, loop_thread, f), 0);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	char cmd[128];

	ev_async_send(f->loop, &f->quit);
	pthread_join(f->th, NULL);
	if (f->held)
		assert_int_equal(ctl_reply(f->held, ctl_ok()), -ENOTCONN); /* server gone: dropped, freed */
	if (f->timer_conn)
		ctl_reply(f->timer_conn, NULL);
	ev_loop_destroy(f->loop);
	assert_int_equal(access(f->path, F_OK), -1); /* stop unlinked the socket */
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	pthread_mutex_destroy(&f->m);
	free(f);
	return 0;
}

static int call(struct fx *f, const char *cmd, struct json_object **reply, char *err)
{
	struct json_object *req = json_object_new_object();
	int rc;

	json_object_object_add(req, "cmd", json_object_new_string(cmd));
	rc = ctl_call(f->path, req, reply, 2000, err, 256);
	json_object_put(req);
	return rc;
}

static int raw_connect(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	set_sun(&sa, path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static void raw_send(int fd, const char *s)
{
	assert_int_equal(send(fd, s, strlen(s), MSG_NOSIGNAL), (ssize_t)strlen(s));
}

/* Read one line (without '\n') within 2 s. Returns its length, or -1 on EOF/error/timeout. */
static int raw_line(int fd, char *buf, size_t cap)
{
	size_t n = 0;

	while (n + 1 < cap) {
		struct pollfd p = {.fd = fd, .events = POLLIN};

		if (poll(&p, 1, 2000) <= 0 || recv(fd, buf + n, 1, 0) != 1)
			return -1;
		if (buf[n] == '\n') {
			buf[n] = '\0';
			return (int)n;
		}
		n++;
	}
	return -1;
}

static bool reply_ok(const char *line)
{
	struct json_object *o = json_tokener_parse(line), *ok;
	bool r = o && json_object_object_get_ex(o, "ok", &ok) && json_object_get_boolean(ok);

	json_object_put(o);
	return r;
}

static void test_status(void **state)
{
	struct fx *f = *state;
	struct json_object *r, *v;
	char err[256];

	assert_int_equal(call(f, "status", &r, err), 0);
	assert_true(json_object_object_get_ex(r, "state", &v));
	assert_string_equal(json_object_get_string(v), "running");
	assert_true(json_object_object_get_ex(r, "mem", &v));
	assert_int_equal(json_object_get_int64(json_object_object_get(v, "size")), 1 << 26);
	/* "ok" was added in front */
	assert_non_null(
		strstr(json_object_to_json_string_ext(r, JSON_C_TO_STRING_PLAIN), "{\"ok\":true,\"state\""));
	json_object_put(r);
}

static void test_errors(void **state)
{
	struct fx *f = *state;
	struct json_object *r;
	char err[256];

	assert_int_equal(call(f, "bogus", &r, err), -EREMOTEIO);
	assert_string_equal(err, "unknown command 'bogus'");
	assert_non_null(r);
	json_object_put(r);
	assert_int_equal(call(f, "fail", &r, err), -EREMOTEIO);
	assert_string_equal(err, "it failed: 42");
	json_object_put(r);
	assert_int_equal(call(f, "nonobj", &r, err), -EREMOTEIO);
	assert_non_null(strstr(err, "internal error"));
	json_object_put(r);
	assert_int_equal(call(f, "defer_bad", &r, err), -EREMOTEIO);
	assert_non_null(strstr(err, "internal error"));
	json_object_put(r);
}

static void test_bad_lines_keep_connection(void **state)
{
	struct fx *f = *state;
	char line[512];
	int fd = raw_connect(f->path);

	raw_send(fd, "garbage\n[1]\n{}\n\n{\"cmd\":7}\r\n{\"cmd\":\"status\"}\r\n");
	for (int i = 0; i < 5; i++) {
		assert_true(raw_line(fd, line, sizeof(line)) > 0);
		assert_false(reply_ok(line));
	}
	assert_true(raw_line(fd, line, sizeof(line)) > 0);
	assert_true(reply_ok(line));
	close(fd);
}

static void test_oversized_closes(void **state)
{
	struct fx *f = *state;
	struct json_object *r;
	size_t big = CTL_MAX_LINE + 5000;
	char *junk = malloc(big), line[512], c;
	int fd = raw_connect(f->path);

	memset(junk, 'a', big);
	assert_int_equal(send(fd, junk, big, MSG_NOSIGNAL), (ssize_t)big);
	assert_true(raw_line(fd, line, sizeof(line)) > 0);
	assert_string_equal(line, "{\"ok\":false,\"error\":\"request too large\"}");
	assert_true(recv(fd, &c, 1, 0) <= 0); /* closed (EOF or reset) */
	close(fd);
	free(junk);
	assert_int_equal(call(f, "status", &r, line), 0); /* server unaffected */
	json_object_put(r);
}

static void test_deferred(void **state)
{
	struct fx *f = *state;
	struct json_object *r;
	char err[256], line[512];
	int fd;

	assert_int_equal(call(f, "defer_timer", &r, err), 0);
	assert_string_equal(json_object_get_string(json_object_object_get(r, "deferred")), "timer");
	json_object_put(r);
	assert_int_equal(call(f, "defer_thread", &r, err), 0);
	assert_string_equal(json_object_get_string(json_object_object_get(r, "deferred")), "thread");
	json_object_put(r);
	assert_int_equal(call(f, "defer_now", &r, err), 0);
	json_object_put(r);
	/* pipelined: the status behind a deferred request is answered after it, in order */
	fd = raw_connect(f->path);
	raw_send(fd, "{\"cmd\":\"defer_thread\"}\n{\"cmd\":\"status\"}\n");
	assert_true(raw_line(fd, line, sizeof(line)) > 0);
	assert_non_null(strstr(line, "\"deferred\":\"thread\""));
	assert_true(raw_line(fd, line, sizeof(line)) > 0);
	assert_non_null(strstr(line, "\"state\":\"running\""));
	/* half-close: replies still come, then EOF */
	raw_send(fd, "{\"cmd\":\"defer_timer\"}\n");
	shutdown(fd, SHUT_WR);
	assert_true(raw_line(fd, line, sizeof(line)) > 0);
	assert_non_null(strstr(line, "\"deferred\":\"timer\""));
	assert_int_equal(raw_line(fd, line, sizeof(line)), -1);
	close(fd);
}

static struct ctl_conn *wait_held(struct fx *f)
{
	struct ctl_conn *c = NULL;

	for (int i = 0; i < 2000 && !c; i++) {
		pthread_mutex_lock(&f->m);
		c = f->held;
		f->held = NULL;
		pthread_mutex_unlock(&f->m);
		if (!c)
			usleep(1000);
	}
	assert_non_null(c);
	return c;
}

static void test_disconnect_before_deferred(void **state)
{
	struct fx *f = *state;
	struct json_object *r;
	struct ctl_conn *c;
	char err[256];
	int fd = raw_connect(f->path), i;

	raw_send(fd, "{\"cmd\":\"defer_hold\"}\n");
	c = wait_held(f);
	assert_true(ctl_conn_alive(c));
	close(fd);
	for (i = 0; i < 2000 && ctl_conn_alive(c); i++)
		usleep(1000);
	assert_false(ctl_conn_alive(c));
	assert_int_equal(ctl_reply(c, ctl_ok()), -ENOTCONN);
	/* a client that times out waiting */
	assert_int_equal(call(f, "status", &r, err), 0);
	json_object_put(r);
	{
		struct json_object *req = json_object_new_object();

		json_object_object_add(req, "cmd", json_object_new_string("defer_hold"));
		assert_int_equal(ctl_call(f->path, req, &r, 100, err, sizeof(err)), -ETIMEDOUT);
		assert_null(r);
		assert_non_null(strstr(err, "within 100 ms"));
		json_object_put(req);
	}
	c = wait_held(f);
	i = ctl_reply(c, ctl_ok()); /* the client is gone (or about to be): never a crash */
	assert_true(i == 0 || i == -ENOTCONN);
}

static void test_missing_and_stale(void **state)
{
	struct fx *f = *state;
	struct json_object *req = json_object_new_object(), *r;
	char err[256], path[200];
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd;

	json_object_object_add(req, "cmd", json_object_new_string("status"));
	snprintf(path, sizeof(path), "%s/none.sock", f->dir);
	assert_int_equal(ctl_call(path, req, &r, 500, err, sizeof(err)), -ENOENT);
	assert_null(r);
	assert_int_equal(strncmp(err, "no VM control socket at ", 24), 0);
	assert_non_null(strstr(err, "(is the VM running?)"));
	/* stale socket file: refused */
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	set_sun(&sa, path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	assert_int_equal(ctl_call(path, req, &r, 500, err, sizeof(err)), -ECONNREFUSED);
	json_object_put(req);
}

/* setup already replaced a stale socket file at f->path: the server answers */
static void test_stale_takeover(void **state)
{
	struct fx *f = *state;
	struct json_object *r;
	char err[256];

	assert_int_equal(call(f, "status", &r, err), 0);
	json_object_put(r);
}

static void test_in_use_and_not_socket(void **state)
{
	struct fx *f = *state;
	struct ev_loop *l2 = ev_loop_new(EVFLAG_AUTO);
	struct ctl_server *s2 = NULL;
	struct json_object *r;
	char err[256], path[200];
	int fd;

	assert_int_equal(ctl_server_start(&s2, l2, f->path, -1, handler, f, err, sizeof(err)), -EADDRINUSE);
	assert_null(s2);
	assert_non_null(strstr(err, "is in use by a running VM"));
	assert_int_equal(call(f, "status", &r, err), 0); /* the first server is untouched */
	json_object_put(r);
	snprintf(path, sizeof(path), "%s/plain", f->dir);
	fd = open(path, O_CREAT | O_WRONLY, 0644);
	close(fd);
	assert_int_equal(ctl_server_start(&s2, l2, path, -1, handler, f, err, sizeof(err)), -EEXIST);
	assert_non_null(strstr(err, "not a socket"));
	assert_int_equal(access(path, F_OK), 0); /* not unlinked */
	memset(path, 'x', sizeof(path) - 1);
	path[sizeof(path) - 1] = '\0';
	assert_int_equal(ctl_server_start(&s2, l2, path, -1, handler, f, err, sizeof(err)), -ENAMETOOLONG);
	ev_loop_destroy(l2);
}

static void test_many_clients(void **state)
{
	struct fx *f = *state;
	int fds[40];
	char line[512];

	for (int i = 0; i < 40; i++) {
		fds[i] = raw_connect(f->path);
		raw_send(fds[i], "{\"cmd\":\"status\"}\n{\"cmd\":");
	}
	for (int i = 39; i >= 0; i--) {
		assert_true(raw_line(fds[i], line, sizeof(line)) > 0);
		assert_true(reply_ok(line));
		close(fds[i]); /* mid-line disconnect */
	}
}

/* A client that floods requests and never reads its replies gets dropped; others are served. */
static void test_non_reader_dropped(void **state)
{
	struct fx *f = *state;
	struct json_object *r;
	char req[17 * 64 + 1], buf[65536], err[256];
	struct timespec t0, t1;
	struct timeval tmo = {.tv_sec = 3};
	int fd = raw_connect(f->path), dropped = 0;
	ssize_t n;

	for (int i = 0; i < 64; i++)
		memcpy(req + 17 * i, "{\"cmd\":\"status\"}\n", 17);
	fcntl(fd, F_SETFL, O_NONBLOCK);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		n = send(fd, req, 17 * 64, MSG_NOSIGNAL);
		if (n < 0 && errno != EAGAIN) {
			dropped = 1;
			break;
		}
		if (n < 0)
			usleep(200);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if (t1.tv_sec - t0.tv_sec > 3)
			break;
	}
	assert_true(dropped);
	assert_int_equal(call(f, "status", &r, err), 0);
	json_object_put(r);
	/* its queued replies drain, then EOF or reset — within 3 s, or the server never let it go
	 * (a blocking recv would hang here instead of failing) */
	fcntl(fd, F_SETFL, 0);
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tmo, sizeof(tmo)), 0);
	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
		;
	if (n < 0 && errno != ECONNRESET)
		fail_msg("dropped client: recv %s (want EOF or ECONNRESET)",
			 errno == EAGAIN ? "timed out after 3 s" : strerror(errno));
	close(fd);
}

static void test_stop_from_handler(void **state)
{
	struct fx *f = *state;
	struct json_object *r;
	char err[256];

	assert_int_equal(call(f, "stop_server", &r, err), -EPROTO);
	assert_null(r);
	assert_int_equal(access(f->path, F_OK), -1);
	assert_int_equal(call(f, "status", &r, err), -ENOENT);
}

static void test_refused(void **state)
{
	struct fx *f = *state;
	struct json_object *r, *v;
	char err[256];
	int rc;

	rc = call(f, "refuse", &r, err);
	assert_int_equal(rc, -EREMOTEIO);
	assert_string_equal(err, "not in this state: 7");
	assert_true(json_object_object_get_ex(r, "refused", &v) && json_object_get_boolean(v));
	assert_int_equal(ctl_outcome(rc, r), CTL_OUTCOME_REFUSED);
	json_object_put(r);
	rc = call(f, "fail", &r, err);
	assert_int_equal(ctl_outcome(rc, r), CTL_OUTCOME_FAILED);
	json_object_put(r);
	assert_int_equal(ctl_outcome(call(f, "status", &r, err), r), CTL_OUTCOME_OK);
	json_object_put(r);
}

/* After its reply a connection can become a byte stream owned by the handler's code (`doppel console`). */
static void test_handover(void **state)
{
	struct fx *f = *state;
	struct json_object *req = json_object_new_object(), *r = NULL, *v;
	char err[256], buf[64];
	int fd = -1, sfd = -1;
	ssize_t n;

	pthread_mutex_lock(&f->m);
	f->stream_fd = -1;
	pthread_mutex_unlock(&f->m);
	json_object_object_add(req, "cmd", json_object_new_string("handover"));
	assert_int_equal(ctl_call_stream(f->path, req, &r, 2000, &fd, err, sizeof(err)), 0);
	json_object_put(req);
	assert_true(fd >= 0);
	assert_true(json_object_object_get_ex(r, "stream", &v) && json_object_get_boolean(v));
	json_object_put(r);
	/* the bytes after the reply line were not swallowed by the reply's reader */
	n = recv(fd, buf, sizeof(buf), 0);
	assert_int_equal(n, 13);
	assert_memory_equal(buf, "hello-stream\n", 13);
	for (int i = 0; i < 200 && sfd < 0; i++) {
		pthread_mutex_lock(&f->m);
		sfd = f->stream_fd;
		pthread_mutex_unlock(&f->m);
		if (sfd < 0)
			usleep(5000);
	}
	assert_true(sfd >= 0);
	/* client to handler, and the server no longer reads it as requests */
	assert_int_equal(send(fd, "{\"cmd\":\"status\"}\n", 17, MSG_NOSIGNAL), 17);
	n = recv(sfd, buf, sizeof(buf), 0);
	assert_int_equal(n, 17);
	assert_memory_equal(buf, "{\"cmd\":\"status\"}\n", 17);
	/* the server serves others as before */
	assert_int_equal(call(f, "status", &r, err), 0);
	json_object_put(r);
	close(sfd);
	n = recv(fd, buf, sizeof(buf), 0);
	assert_int_equal(n, 0);
	close(fd);
}

static int fx_setup_stale(void **state)
{
	*state = (void *)1;
	return fx_setup(state);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_valid),
		cmocka_unit_test(test_parse_malformed),
		cmocka_unit_test(test_parse_nonobject),
		cmocka_unit_test(test_parse_cmd),
		cmocka_unit_test(test_parse_empty),
		cmocka_unit_test(test_parse_oversized),
		cmocka_unit_test_setup_teardown(test_status, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_errors, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_bad_lines_keep_connection, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_oversized_closes, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_deferred, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_disconnect_before_deferred, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_missing_and_stale, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_stale_takeover, fx_setup_stale, fx_teardown),
		cmocka_unit_test_setup_teardown(test_in_use_and_not_socket, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_many_clients, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_non_reader_dropped, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_stop_from_handler, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_refused, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_handover, fx_setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
