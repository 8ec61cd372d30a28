/* test_witness.c — the etcd witness client against a real single-node etcd and a fake garbage server. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/clock.h"
#include "common/errf.h"
#include "common/log.h"
#include "replication/witness.h"

#define MS 1000000ull

/* ---- a real etcd on loopback ----------------------------------------------------------------- */

struct etcd {
	pid_t pid;
	int port;
	char dir[64], url[64];
};

static struct etcd E;

static int free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t l = sizeof(a);
	int s = socket(AF_INET, SOCK_STREAM, 0), port;

	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) || getsockname(s, (struct sockaddr *)&a, &l))
		fail_msg("set-up: free port: %s", strerror(errno));
	port = ntohs(a.sin_port);
	close(s);
	return port;
}

/* GET /health with a raw socket: 1 when etcd answers {"health":"true"}. */
static int etcd_healthy(int port)
{
	struct sockaddr_in a = {
		.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	const char req[] = "GET /health HTTP/1.0\r\n\r\n";
	char buf[2048];
	ssize_t n, got = 0;
	int s = socket(AF_INET, SOCK_STREAM, 0), ok;
	struct timeval tv = {.tv_sec = 1};

	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(s, (struct sockaddr *)&a, sizeof(a)) || write(s, req, sizeof(req) - 1) < 0) {
		close(s);
		return 0;
	}
	while ((n = read(s, buf + got, sizeof(buf) - 1 - (size_t)got)) > 0)
		got += n;
	buf[got] = 0;
	close(s);
	ok = strstr(buf, "\"health\":\"true\"") != NULL;
	return ok;
}

/* fork/exec etcd with its data and log in a temp dir; FAILS the test when it does not come up. */
static int etcd_start(void **state)
{
	int peer = free_port();
	char lc[64], lp[64], ic[96], logf[96];
	uint64_t end;

	(void)state;
	E.port = free_port();
	snprintf(E.dir, sizeof(E.dir), "/tmp/doppel-witness-XXXXXX");
	if (!mkdtemp(E.dir))
		fail_msg("set-up: mkdtemp: %s", strerror(errno));
	snprintf(E.url, sizeof(E.url), "http://127.0.0.1:%d", E.port);
	snprintf(lc, sizeof(lc), "http://127.0.0.1:%d", E.port);
	snprintf(lp, sizeof(lp), "http://127.0.0.1:%d", peer);
	snprintf(ic, sizeof(ic), "w=%s", lp);
	snprintf(logf, sizeof(logf), "%s/etcd.log", E.dir);
	E.pid = fork();
	if (E.pid == 0) {
		int fd = open(logf, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		char data[96];

		snprintf(data, sizeof(data), "%s/data", E.dir);
		dup2(fd, 1);
		dup2(fd, 2);
		setpgid(0, 0);
		execlp("etcd", "etcd", "--name", "w", "--data-dir", data, "--listen-client-urls", lc,
		       "--advertise-client-urls", lc, "--listen-peer-urls", lp,
		       "--initial-advertise-peer-urls", lp, "--initial-cluster", ic, "--heartbeat-interval",
		       "50", "--election-timeout", "500", NULL);
		_exit(127);
	}
	if (E.pid < 0)
		fail_msg("set-up: fork: %s", strerror(errno));
	for (end = now_ns() + 15000 * MS; now_ns() < end; usleep(50000)) {
		if (waitpid(E.pid, NULL, WNOHANG) == E.pid)
			fail_msg("set-up: etcd exited at start (is etcd-server installed? log: %s)", logf);
		if (etcd_healthy(E.port))
			return 0;
	}
	fail_msg("set-up: etcd on %s not healthy after 15 s (log: %s)", E.url, logf);
	return -1;
}

static int etcd_stop(void **state)
{
	char cmd[128];

	(void)state;
	if (E.pid > 0) {
		kill(E.pid, SIGCONT);
		kill(E.pid, SIGKILL);
		waitpid(E.pid, NULL, 0);
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", E.dir);
	return system(cmd) == 0 ? 0 : -1;
}

static struct witness *mk(const char *urls, const char *vm, uint32_t ttl)
{
	struct witness *w = NULL;
	char err[256];
	int rc = witness_new(&w, urls, vm, ttl, err, sizeof(err));

	if (rc)
		fail_msg("witness_new: %s", err);
	return w;
}

/* ---- against etcd ------------------------------------------------------------------------------ */

static void test_acquire_busy_release(void **state)
{
	struct witness *a = mk(E.url, "vm-abr", 1000), *b = mk(E.url, "vm-abr", 1000);
	char err[256], who[64];
	uint64_t ta, tb, tok, t0, acq_ns = 0;

	(void)state;
	t0 = now_ns();
	assert_int_equal(witness_acquire(a, "hostA:1", err, sizeof(err)), 0);
	acq_ns = now_ns() - t0;
	ta = witness_token(a);
	assert_true(ta > 0);
	assert_true(witness_lease_valid(a));
	assert_false(witness_lost(a));
	assert_int_equal(witness_acquire(a, "hostA:1", err, sizeof(err)), 0); /* idempotent */
	assert_int_equal(witness_token(a), ta);

	assert_int_equal(witness_acquire(b, "hostB:2", err, sizeof(err)), -EBUSY);
	assert_non_null(strstr(err, "hostA:1"));
	assert_null(strchr(err, '\n'));
	assert_int_equal(witness_token(b), 0);
	assert_false(witness_lease_valid(b));
	assert_int_equal(witness_holder(b, who, sizeof(who), &tok, err, sizeof(err)), 0);
	assert_string_equal(who, "hostA:1");
	assert_int_equal(tok, ta);

	assert_int_equal(witness_release(a, err, sizeof(err)), 0);
	assert_false(witness_lease_valid(a));
	assert_int_equal(witness_token(a), 0);
	assert_int_equal(witness_holder(b, who, sizeof(who), &tok, err, sizeof(err)), -ENOENT);
	assert_int_equal(witness_acquire(b, "hostB:2", err, sizeof(err)), 0);
	tb = witness_token(b);
	assert_true(tb > ta);
	assert_int_equal(witness_release(b, err, sizeof(err)), 0);
	assert_int_equal(witness_release(b, err, sizeof(err)), 0); /* nothing held: fine */
	print_message("witness: acquire (grant + txn) %.2f ms; tokens %" PRIu64 " -> %" PRIu64 "\n",
		      acq_ns / 1e6, ta, tb);
	witness_free(a);
	witness_free(b);
}

static void test_renew_latency_and_keepalive(void **state)
{
	struct witness *a = mk(E.url, "vm-ka", 1000);
	char err[256], who[64];
	uint64_t tok, sum = 0, max = 0, t_end;
	int i, n = 50;

	(void)state;
	assert_int_equal(witness_acquire(a, "hostA", err, sizeof(err)), 0);
	for (i = 0; i < n; i++) {
		uint64_t v0 = witness_valid_until_ns(a);

		assert_int_equal(witness_renew(a, err, sizeof(err)), 0);
		assert_true(witness_valid_until_ns(a) >= v0);
		sum += witness_last_rtt_ns(a);
		max = witness_last_rtt_ns(a) > max ? witness_last_rtt_ns(a) : max;
	}
	print_message("witness: renewal rtt on loopback: mean %.2f ms, max %.2f ms (%d)\n", sum / n / 1e6,
		      max / 1e6, n);
	/* The window: valid_until = send time + ttl - margin (default ttl/10 + 50 ms). */
	assert_int_equal(witness_valid_until_ns(a), witness_last_renew_ns(a) + (1000 - 150) * MS);

	assert_int_equal(witness_start_keepalive(a, err, sizeof(err)), 0);
	for (t_end = now_ns() + 3500 * MS; now_ns() < t_end; usleep(20000))
		assert_true(witness_lease_valid(a)); /* never a gap: renewals every ttl/3 */
	assert_int_equal(witness_holder(a, who, sizeof(who), &tok, err, sizeof(err)), 0);
	assert_string_equal(who, "hostA");
	assert_int_equal(tok, witness_token(a));
	assert_int_equal(witness_release(a, err, sizeof(err)), 0);
	witness_free(a);
}

/* Keepalives stop: validity ends at the promised time, and the next holder gets the key only
 * after that (the safety property: never two holders that both think they are valid). */
static void test_expiry_then_takeover(void **state)
{
	struct witness *a = mk(E.url, "vm-exp", 1000), *b = mk(E.url, "vm-exp", 1000);
	char err[256];
	uint64_t last, until, t_invalid, t_acq = 0;
	int rc = -1;

	(void)state;
	assert_int_equal(witness_acquire(a, "A", err, sizeof(err)), 0);
	assert_int_equal(witness_start_keepalive(a, err, sizeof(err)), 0);
	usleep(500000);
	witness_stop_keepalive(a);
	last = witness_last_renew_ns(a);
	until = witness_valid_until_ns(a);
	assert_int_equal(until, last + 850 * MS);
	while (witness_lease_valid(a))
		usleep(1000);
	t_invalid = now_ns();
	assert_true(t_invalid <= last + 1000 * MS + 5 * MS);
	while (now_ns() < last + 5000 * MS) {
		rc = witness_acquire(b, "B", err, sizeof(err));
		if (rc == 0) {
			t_acq = now_ns();
			break;
		}
		assert_int_equal(rc, -EBUSY);
		usleep(20000);
	}
	assert_int_equal(rc, 0);
	assert_true(t_acq > until);
	assert_true(witness_token(b) > 0);
	/* A's lease is gone on the server: its next renewal says so. */
	assert_int_equal(witness_renew(a, err, sizeof(err)), -ENOENT);
	assert_true(witness_lost(a));
	assert_int_equal(witness_valid_until_ns(a), 0);
	print_message("witness: A invalid %.0f ms after its last renewal, B acquired %.0f ms after it\n",
		      (t_invalid - last) / 1e6, (t_acq - last) / 1e6);
	assert_int_equal(witness_release(a, err, sizeof(err)), 0); /* lease gone: still 0 */
	assert_int_equal(witness_release(b, err, sizeof(err)), 0);
	witness_free(a);
	witness_free(b);
}

/* A successor takes over from a holder that stopped renewing after the holder's own window (its
 * ttl_ms), not after etcd's whole-second lease expiry; never while the holder renews. */
static void test_takeover_silent_holder(void **state)
{
	struct witness *a = mk(E.url, "vm-tk", 600), *b = mk(E.url, "vm-tk", 600);
	char err[256];
	uint64_t last, until, t_acq = 0, t_end;
	int rc = -1, busy = 0;

	(void)state;
	assert_int_equal(witness_set_renew_ms(a, 50), 0);
	assert_int_equal(witness_acquire(a, "A", err, sizeof(err)), 0);
	assert_int_equal(witness_start_keepalive(a, err, sizeof(err)), 0);
	/* While A renews, B never gets it (for 4 windows). */
	for (t_end = now_ns() + 1800 * MS; now_ns() < t_end; busy++) {
		assert_int_equal(witness_takeover(b, "B", err, sizeof(err)), -EBUSY);
		assert_non_null(strstr(err, "\"A\""));
		assert_true(witness_lease_valid(a));
		usleep(20000);
	}
	witness_stop_keepalive(a); /* A goes silent (a killed or stopped primary) */
	last = witness_last_renew_ns(a);
	until = witness_valid_until_ns(a);
	assert_true(until <= last + 600 * MS);
	while (now_ns() < last + 5000 * MS) {
		rc = witness_takeover(b, "B", err, sizeof(err));
		if (rc == 0) {
			t_acq = now_ns();
			break;
		}
		assert_int_equal(rc, -EBUSY);
		usleep(10000);
	}
	assert_int_equal(rc, 0);
	assert_true(t_acq > until); /* never two valid holders */
	assert_true(witness_token(b) > 0);
	print_message("witness: takeover %.0f ms after the holder's last renewal (window 600 ms, granted "
		      "lease 1 s), after %d refusals while it renewed\n",
		      (t_acq - last) / 1e6, busy);
	/* Well before etcd could have expired A's 1 s lease: the key was taken over, not expired. */
	assert_true(t_acq - last < 1000 * MS);
	/* A's next renewal finds the key gone: it is lost, not valid again. */
	assert_int_equal(witness_renew(a, err, sizeof(err)), -ENOENT);
	assert_true(witness_lost(a));
	assert_false(witness_lease_valid(a));
	assert_int_equal(witness_release(b, err, sizeof(err)), 0);
	witness_free(a);
	witness_free(b);
}

/* A takeover by a holder's successor while the key is absent is a plain acquire. */
static void test_takeover_absent(void **state)
{
	struct witness *b = mk(E.url, "vm-tk2", 300);
	char err[256], who[64];
	uint64_t tok;

	(void)state;
	assert_int_equal(witness_takeover(b, "B", err, sizeof(err)), 0);
	assert_int_equal(witness_holder(b, who, sizeof(who), &tok, err, sizeof(err)), 0);
	assert_string_equal(who, "B");
	assert_int_equal(tok, witness_token(b));
	assert_int_equal(witness_release(b, err, sizeof(err)), 0);
	witness_free(b);
}

/* etcd frozen (SIGSTOP): renewals time out, validity runs out within the TTL of the last renewal. */
static void test_etcd_stopped(void **state)
{
	struct witness *a = mk(E.url, "vm-stop", 1000);
	char err[256];
	uint64_t t_stop, last, t_invalid, end;

	(void)state;
	assert_int_equal(witness_acquire(a, "A", err, sizeof(err)), 0);
	assert_int_equal(witness_start_keepalive(a, err, sizeof(err)), 0);
	usleep(400000);
	t_stop = now_ns();
	assert_int_equal(kill(E.pid, SIGSTOP), 0);
	while (witness_lease_valid(a))
		usleep(1000);
	t_invalid = now_ns();
	last = witness_last_renew_ns(a);
	assert_true(t_invalid <= last + 1000 * MS + 5 * MS);
	assert_true(t_invalid - t_stop <= 1000 * MS + 5 * MS);
	assert_int_equal(kill(E.pid, SIGCONT), 0);
	/* After etcd resumes the keepalive thread either renews (the lease had not yet been revoked)
	 * or learns that the lease is gone; either way it never blocks. */
	for (end = now_ns() + 3000 * MS; now_ns() < end && !witness_lost(a) && !witness_lease_valid(a);)
		usleep(10000);
	print_message(
		"witness: etcd SIGSTOPped: lease seen invalid %.0f ms after the stop (%.0f ms after the last "
		"renewal); after SIGCONT: %s\n",
		(t_invalid - t_stop) / 1e6, (t_invalid - last) / 1e6,
		witness_lost(a)		 ? "lease gone"
		: witness_lease_valid(a) ? "renewed"
					 : "neither in 3 s");
	assert_true(witness_lost(a) || witness_lease_valid(a));
	if (witness_release(a, err, sizeof(err)))
		print_message("witness: release after SIGCONT: %s\n", err);
	witness_free(a);
	while (!etcd_healthy(E.port))
		usleep(20000);
}

static void test_dead_first_endpoint(void **state)
{
	char urls[160], err[256], who[32];
	struct witness *a;
	uint64_t tok;

	(void)state;
	snprintf(urls, sizeof(urls), "http://127.0.0.1:%d,%s/", free_port(), E.url);
	a = mk(urls, "vm-dead", 1000);
	assert_int_equal(witness_acquire(a, "A", err, sizeof(err)), 0);
	assert_int_equal(witness_renew(a, err, sizeof(err)), 0);
	assert_int_equal(witness_holder(a, who, sizeof(who), &tok, err, sizeof(err)), 0);
	assert_string_equal(who, "A");
	assert_int_equal(witness_release(a, err, sizeof(err)), 0);
	witness_free(a);
}

/* ---- bad input, garbage replies ------------------------------------------------------------------ */

static void test_bad_arguments(void **state)
{
	struct witness *w = (struct witness *)1;
	char err[256];

	(void)state;
	assert_int_equal(witness_new(&w, "ftp://127.0.0.1:1", "vm", 1000, err, sizeof(err)), -EINVAL);
	assert_null(w);
	assert_non_null(strstr(err, "ftp://"));
	assert_int_equal(witness_new(&w, "", "vm", 1000, err, sizeof(err)), -EINVAL);
	assert_int_equal(witness_new(&w, ",,", "vm", 1000, err, sizeof(err)), -EINVAL);
	assert_int_equal(witness_new(&w, "http://127.0.0.1:1", "a/b", 1000, err, sizeof(err)), -EINVAL);
	assert_int_equal(witness_new(&w, "http://127.0.0.1:1", "", 1000, err, sizeof(err)), -EINVAL);
	assert_int_equal(witness_new(&w, "http://127.0.0.1:1", "vm", 10, err, sizeof(err)), -EINVAL);
	w = mk("http://127.0.0.1:1", "vm", 1000);
	assert_string_equal(witness_key(w), "/doppel/vm/vm/active");
	assert_int_equal(witness_ttl_ms(w), 1000);
	assert_int_equal(witness_set_margin_ms(w, 1000), -EINVAL);
	assert_int_equal(witness_set_margin_ms(w, 100), 0);
	assert_int_equal(witness_set_timeouts_ms(w, 200, 100), -EINVAL);
	assert_int_equal(witness_set_renew_ms(w, 1000), -EINVAL);
	assert_int_equal(witness_set_renew_ms(w, 5), -EINVAL);
	assert_int_equal(witness_set_renew_ms(w, 200), 0);
	assert_int_equal(witness_renew(w, err, sizeof(err)), -ENOLCK);
	assert_int_equal(witness_start_keepalive(w, err, sizeof(err)), -ENOLCK);
	assert_int_equal(witness_acquire(w, "", err, sizeof(err)), -EINVAL);
	assert_int_equal(witness_acquire(w, "A", err, sizeof(err)), -ECONNREFUSED);
	assert_null(strchr(err, '\n'));
	witness_free(w);
	witness_free(NULL);
}

/* A one-connection-at-a-time HTTP server that answers every request with `reply` (NULL: accept
 * and never answer). */
struct fake {
	int lfd, port, stop;
	const char *reply;
	size_t reply_len;
	pthread_t thr;
};

static void *fake_main(void *opaque)
{
	struct fake *f = opaque;

	while (!f->stop) {
		struct pollfd p = {.fd = f->lfd, .events = POLLIN};
		char buf[4096];
		int c;

		if (poll(&p, 1, 20) <= 0)
			continue;
		c = accept(f->lfd, NULL, NULL);
		if (c < 0)
			continue;
		usleep(5000);
		(void)!read(c, buf, sizeof(buf)); /* small requests arrive in one segment on loopback */
		if (f->reply) {
			for (size_t off = 0; off < f->reply_len;) {
				ssize_t n = write(c, f->reply + off, f->reply_len - off);

				if (n <= 0)
					break;
				off += (size_t)n;
			}
		} else {
			while (!f->stop)
				usleep(10000);
		}
		close(c);
	}
	return NULL;
}

static void fake_start(struct fake *f, const char *reply, size_t len)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t l = sizeof(a);
	int one = 1;

	memset(f, 0, sizeof(*f));
	f->reply = reply;
	f->reply_len = len;
	f->lfd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(f->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&a, &l), 0);
	assert_int_equal(listen(f->lfd, 8), 0);
	f->port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&f->thr, NULL, fake_main, f), 0);
}

static void fake_stop(struct fake *f)
{
	f->stop = 1;
	pthread_join(f->thr, NULL);
	close(f->lfd);
}

/* acquire against a server answering `body` with `status`: the rc, one line in err. */
static int acquire_against(int status, const char *body, int real_second, char *err, size_t errlen)
{
	char reply[2048], urls[160];
	struct fake f;
	struct witness *w;
	int rc;

	snprintf(reply, sizeof(reply),
		 "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
		 "Connection: close\r\n\r\n%s",
		 status, strlen(body), body);
	fake_start(&f, reply, strlen(reply));
	snprintf(urls, sizeof(urls), "http://127.0.0.1:%d%s%s", f.port, real_second ? "," : "",
		 real_second ? E.url : "");
	w = mk(urls, "vm-fake", 1000);
	rc = witness_acquire(w, "A", err, errlen);
	if (rc == 0)
		assert_int_equal(witness_release(w, NULL, 0), 0);
	witness_free(w);
	fake_stop(&f);
	assert_null(strchr(err, '\n'));
	print_message("witness: HTTP %d %.40s -> %d (%s)\n", status, body, rc, rc ? err : "ok");
	return rc;
}

static void test_garbage_replies(void **state)
{
	char err[256];
	const char big_hdr[] = "HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n";
	char *big = malloc(sizeof(big_hdr) + 2000000);
	struct fake f;
	struct witness *w;
	uint64_t t0;
	char urls[64];

	(void)state;
	assert_int_equal(acquire_against(200, "hello", 0, err, sizeof(err)), -EPROTO);
	assert_int_equal(acquire_against(200, "[1,2]", 0, err, sizeof(err)), -EPROTO);
	assert_int_equal(acquire_against(200, "{\"ID\":\"abc\",\"TTL\":\"1\"}", 0, err, sizeof(err)),
			 -EPROTO);
	assert_int_equal(acquire_against(200, "{\"ID\":{},\"TTL\":true}", 0, err, sizeof(err)), -EPROTO);
	assert_int_equal(acquire_against(200, "{}", 0, err, sizeof(err)), -EPROTO);
	assert_int_equal(acquire_against(200, "", 0, err, sizeof(err)), -EPROTO);
	assert_int_equal(acquire_against(404, "{\"error\":\"nope\",\"code\":5}", 0, err, sizeof(err)),
			 -ENOENT);
	assert_int_equal(acquire_against(400, "{\"error\":\"bad\",\"code\":3}", 0, err, sizeof(err)),
			 -EPROTO);
	assert_non_null(strstr(err, "bad"));
	assert_int_equal(acquire_against(503, "{\"error\":\"etcdserver: request timed out\",\"code\":14}", 0,
					 err, sizeof(err)),
			 -ETIMEDOUT);
	assert_int_equal(acquire_against(502, "<html>", 0, err, sizeof(err)), -ETIMEDOUT);
	/* garbage or unavailable first, etcd second: the client moves on */
	assert_int_equal(acquire_against(200, "hello", 1, err, sizeof(err)), 0);
	assert_int_equal(acquire_against(503, "{\"error\":\"x\",\"code\":14}", 1, err, sizeof(err)), 0);

	/* a reply too long to be etcd's */
	assert_non_null(big);
	memcpy(big, big_hdr, sizeof(big_hdr) - 1);
	memset(big + sizeof(big_hdr) - 1, 'x', 2000000);
	fake_start(&f, big, sizeof(big_hdr) - 1 + 2000000);
	snprintf(urls, sizeof(urls), "http://127.0.0.1:%d", f.port);
	w = mk(urls, "vm-big", 1000);
	assert_int_equal(witness_acquire(w, "A", err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "too long"));
	witness_free(w);
	fake_stop(&f);
	free(big);

	/* a server that accepts and never answers: bounded by the request timeout */
	fake_start(&f, NULL, 0);
	snprintf(urls, sizeof(urls), "http://127.0.0.1:%d", f.port);
	w = mk(urls, "vm-hole", 1000);
	assert_int_equal(witness_set_timeouts_ms(w, 100, 200), 0);
	assert_int_equal(witness_set_op_timeout_ms(w, 50), -EINVAL); /* < connect */
	assert_int_equal(witness_set_op_timeout_ms(w, 200), 0);
	t0 = now_ns();
	assert_int_equal(witness_acquire(w, "A", err, sizeof(err)), -ETIMEDOUT);
	assert_true(now_ns() - t0 < 600 * MS);
	witness_free(w);
	fake_stop(&f);
}

/* ---- driver mode for tests/system/test_witness.py ------------------------------------------------ */

static void json_print_err(const char *what, int rc, char *err)
{
	for (char *q = err; *q; q++)
		*q = *q == '"' || *q == '\\' ? '\'' : *q;
	printf("{\"%s\":%d,\"err\":\"%s\"}\n", what, rc, err);
}

/* test_witness --driver URLS VM TTL_MS HOLDER [RENEW_MS]: acquire (retrying up to 20 s), keep the lease alive
 * and print one JSON line every 20 ms until stdin closes; then release. --driver-takeover: the same,
 * but taking the key over from a silent holder (witness_takeover, every 10 ms) as a standby does. */
static int driver(char **argv)
{
	struct witness *w = NULL;
	char err[256];
	uint64_t start = now_ns(), end = start + 20000 * MS;
	int rc = witness_new(&w, argv[2], argv[3], (uint32_t)atoi(argv[4]), err, sizeof(err));

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!rc && argv[6] && witness_set_renew_ms(w, (uint32_t)atoi(argv[6])))
		rc = errf(err, sizeof(err), -EINVAL, "bad renew interval %s", argv[6]);
	bool tk = !strcmp(argv[1], "--driver-takeover");

	while (w &&
	       (rc = tk ? witness_takeover(w, argv[5], err, sizeof(err))
			: witness_acquire(w, argv[5], err, sizeof(err))) &&
	       now_ns() < end) {
		json_print_err("acquire", rc, err);
		usleep(tk ? 10000 : 100000);
	}
	if (!rc)
		rc = witness_start_keepalive(w, err, sizeof(err));
	if (rc) {
		json_print_err("error", rc, err);
		witness_free(w);
		return 1;
	}
	fcntl(0, F_SETFL, O_NONBLOCK);
	for (;;) {
		char b[64];
		ssize_t n = read(0, b, sizeof(b));
		uint64_t now = now_ns(), vu = witness_valid_until_ns(w);
		double left = vu > now ? (double)(vu - now) / 1e6 : 0.0;
		int valid = now < vu;

		if (n == 0 || (n < 0 && errno != EAGAIN))
			break;

		printf("{\"mono_ns\":%" PRIu64
		       ",\"t_ms\":%.1f,\"valid\":%d,\"valid_ms\":%.1f,\"token\":%" PRIu64
		       ",\"lost\":%d,\"renew_age_ms\":%.1f,\"rtt_ms\":%.2f}\n",
		       now, (double)(now - start) / 1e6, valid, left, witness_token(w), witness_lost(w),
		       (double)(now - witness_last_renew_ns(w)) / 1e6, (double)witness_last_rtt_ns(w) / 1e6);
		usleep(20000);
	}
	rc = witness_release(w, err, sizeof(err));
	printf("{\"released\":%d}\n", rc);
	witness_free(w);
	return 0;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bad_arguments),
		cmocka_unit_test(test_acquire_busy_release),
		cmocka_unit_test(test_renew_latency_and_keepalive),
		cmocka_unit_test(test_expiry_then_takeover),
		cmocka_unit_test(test_takeover_silent_holder),
		cmocka_unit_test(test_takeover_absent),
		cmocka_unit_test(test_etcd_stopped),
		cmocka_unit_test(test_dead_first_endpoint),
		cmocka_unit_test(test_garbage_replies),
	};

	if ((argc == 6 || argc == 7) &&
	    (!strcmp(argv[1], "--driver") || !strcmp(argv[1], "--driver-takeover")))
		return driver(argv);
	signal(SIGPIPE, SIG_IGN);
	log_set_level(LOG_ERROR);
	return cmocka_run_group_tests(tests, etcd_start, etcd_stop);
}
