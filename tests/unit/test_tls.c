/* test_tls.c — the TLS layer: credentials loader, certificate-name check, handshake, relay, deadline. */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/clock.h"
#include "replication/tls.h"

#define MS 1000000ull

static char dir[256]; /* OUT of scripts/tls-certs.sh: pr, sb, mallory, old (expired), other/pr */

static char *path(const char *host, const char *file)
{
	static char buf[4][512];
	static int i;
	char *b = buf[i++ % 4];
	snprintf(b, 512, "%s/%s%s%s", dir, host, file ? "/" : "", file ? file : "");
	return b;
}

static void sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (system(cmd) != 0)
		fail_msg("set-up: `%s` failed (needs certtool, gnutls-bin)", cmd);
}

static int setup_certs(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/doppel-test-tls-%d", (int)getpid());
	sh("sh scripts/tls-certs.sh %s pr sb mallory >/dev/null", dir);
	sh("EXPIRATION='2021-01-01 00:00:00' sh scripts/tls-certs.sh %s old >/dev/null", dir);
	sh("sh scripts/tls-certs.sh %s/other pr >/dev/null", dir);
	sh("mkdir -p %s/mixed && cp %s/pr/ca.pem %s/pr/cert.pem %s/mixed/ && cp %s/sb/key.pem %s/mixed/", dir,
	   dir, dir, dir, dir, dir);
	return 0;
}

static int teardown_certs(void **state)
{
	(void)state;
	sh("rm -rf %s", dir);
	return 0;
}

static void test_loader(void **state)
{
	struct tls_cfg *c = NULL;
	char err[512];

	(void)state;
	assert_int_equal(tls_cfg_load(&c, path("pr", NULL), "sb", err, sizeof(err)), 0);
	assert_string_equal(tls_cfg_peer_name(c), "sb");
	assert_string_equal(tls_cfg_dir(c), path("pr", NULL));
	tls_cfg_free(c);
	assert_int_equal(tls_cfg_load(&c, path("pr", NULL), NULL, err, sizeof(err)), 0);
	assert_null(tls_cfg_peer_name(c));
	tls_cfg_free(c);

	assert_int_equal(tls_cfg_load(&c, path("nosuch", NULL), NULL, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "cannot read"));
	assert_non_null(strstr(err, "nosuch/ca.pem"));
	assert_null(c);
	assert_int_equal(tls_cfg_load(&c, path("old", NULL), NULL, err, sizeof(err)), -EKEYEXPIRED);
	assert_non_null(strstr(err, "old/cert.pem has expired"));
	assert_int_equal(tls_cfg_load(&c, path("mixed", NULL), NULL, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "mixed/cert.pem"));
	assert_int_equal(tls_cfg_load(&c, "", NULL, err, sizeof(err)), -EINVAL);
	assert_int_equal(tls_cfg_load(&c, path("pr", NULL), "", err, sizeof(err)), -EINVAL);
	char longname[300];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	assert_int_equal(tls_cfg_load(&c, path("pr", NULL), longname, err, sizeof(err)), -EINVAL);
	tls_cfg_free(NULL);
}

static void test_cert_names(void **state)
{
	char *pem;
	size_t len = 0;
	FILE *f = fopen(path("pr", "cert.pem"), "r");

	(void)state;
	assert_non_null(f);
	pem = calloc(1, 16384);
	len = fread(pem, 1, 16383, f);
	fclose(f);
	assert_int_equal(tls_cert_names(pem, len, "pr"), 1);
	assert_int_equal(tls_cert_names(pem, len, "sb"), 0);
	assert_int_equal(tls_cert_names(pem, len, "p"), 0);
	assert_int_equal(tls_cert_names(pem, len, "pr.example"), 0);
	assert_int_equal(tls_cert_names("garbage", 7, "pr"), -EINVAL);
	free(pem);
}

/* ---- handshakes over loopback TCP ---- */

struct side {
	struct tls_cfg *c;
	bool server;
	int fd;
	uint64_t deadline;
	int rc;
	char id[TLS_ID_MAX], err[512];
	struct tls_link **link; /* NULL: tls_wrap; else tls_wrap_link fills it */
};

static void *side_main(void *arg)
{
	struct side *s = arg;
	s->rc = tls_wrap_link(s->c, s->server, &s->fd, s->deadline, s->link, s->id, sizeof(s->id), s->err,
			      sizeof(s->err));
	return NULL;
}

static void tcp_pair(int *a, int *b)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	int l = socket(AF_INET, SOCK_STREAM, 0);

	assert_int_equal(bind(l, (void *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(l, 1), 0);
	assert_int_equal(getsockname(l, (void *)&sa, &sl), 0);
	*a = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(*a, (void *)&sa, sizeof(sa)), 0);
	*b = accept(l, NULL, NULL);
	assert_true(*b >= 0);
	close(l);
}

/* Client cdir (pinning cpin) against server sdir (pinning spin). Fills both sides. */
static void run_pair(const char *sdir, const char *spin, const char *cdir, const char *cpin, struct side *srv,
		     struct side *cli)
{
	char err[512];
	pthread_t t;

	struct tls_link **sl = srv->link, **cl = cli->link;

	*srv = (struct side){.server = true, .deadline = now_ns() + 3000 * MS, .link = sl};
	*cli = (struct side){.server = false, .deadline = now_ns() + 3000 * MS, .link = cl};
	assert_int_equal(tls_cfg_load(&srv->c, path(sdir, NULL), spin, err, sizeof(err)), 0);
	assert_int_equal(tls_cfg_load(&cli->c, path(cdir, NULL), cpin, err, sizeof(err)), 0);
	tcp_pair(&cli->fd, &srv->fd);
	pthread_create(&t, NULL, side_main, srv);
	side_main(cli);
	pthread_join(t, NULL);
	tls_cfg_free(srv->c); /* live relays keep their reference */
	tls_cfg_free(cli->c);
}

static void test_handshake_and_relay(void **state)
{
	struct side s = {0}, c = {0};
	char buf[64];

	(void)state;
	run_pair("sb", "pr", "pr", "sb", &s, &c);
	assert_int_equal(s.rc, 0);
	assert_int_equal(c.rc, 0);
	assert_string_equal(s.id, "pr");
	assert_string_equal(c.id, "sb");
	/* the wrapped descriptors carry plaintext both ways, concurrently usable like a socket */
	static char big[1 << 20];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)(i * 7);
	size_t got = 0, sent = 0;
	ssize_t n;
	static char rx[1 << 20];
	while (got < sizeof(big)) {
		if (sent < sizeof(big) && (n = send(c.fd, big + sent, sizeof(big) - sent, MSG_DONTWAIT)) > 0)
			sent += (size_t)n;
		n = recv(s.fd, rx + got, sizeof(rx) - got, MSG_DONTWAIT);
		if (n > 0)
			got += (size_t)n;
		else
			usleep(100);
	}
	assert_memory_equal(rx, big, sizeof(big));
	assert_int_equal(send(s.fd, "ACK!", 4, 0), 4);
	assert_int_equal(recv(c.fd, buf, 4, MSG_WAITALL), 4);
	assert_memory_equal(buf, "ACK!", 4);
	/* closing one side is EOF on the other (close_notify through both relays) */
	close(c.fd);
	assert_int_equal(recv(s.fd, buf, sizeof(buf), 0), 0);
	close(s.fd);
}

/* Read exactly len bytes through the link. */
static void link_read(struct tls_link *l, char *buf, size_t len)
{
	for (size_t got = 0; got < len;) {
		ssize_t n = tls_link_recv(l, buf + got, len - got, 3000);
		assert_true(n > 0);
		got += (size_t)n;
	}
}

/* The direct path: bytes written on the descriptor (relay) and through tls_link_send arrive in the
 * order written; the receiver's first tls_link_recv returns what the rx relay had queued first; the
 * back channel works both ways; a timeout and EOF are reported. */
static void test_direct_path_keeps_order(void **state)
{
	struct tls_link *sl = NULL, *cl = NULL;
	struct side s = {.link = &sl}, c = {.link = &cl};
	static char a[3000], b[1 << 20], d[5000], rx[sizeof(a) + sizeof(b) + sizeof(d)], want[sizeof(rx)];
	char buf[8];

	(void)state;
	run_pair("sb", "pr", "pr", "sb", &s, &c);
	assert_int_equal(s.rc, 0);
	assert_int_equal(c.rc, 0);
	assert_non_null(sl);
	assert_non_null(cl);
	for (size_t i = 0; i < sizeof(want); i++)
		want[i] = (char)(i * 13 + i / 4096);
	memcpy(a, want, sizeof(a));
	memcpy(b, want + sizeof(a), sizeof(b));
	memcpy(d, want + sizeof(a) + sizeof(b), sizeof(d));
	assert_int_equal(send(c.fd, a, sizeof(a), 0), (ssize_t)sizeof(a)); /* through the tx relay */
	usleep(20000); /* let the server's rx relay queue it in its socketpair */
	assert_int_equal(tls_link_send(cl, b, sizeof(b), 3000), 0); /* direct, after a */
	assert_int_equal(send(c.fd, d, sizeof(d), 0), (ssize_t)sizeof(d)); /* relay again, after b */
	link_read(sl, rx, sizeof(rx));
	assert_memory_equal(rx, want, sizeof(want));
	/* back channel: the server writes on its descriptor, the client reads directly */
	assert_int_equal(send(s.fd, "ACK!", 4, 0), 4);
	link_read(cl, buf, 4);
	assert_memory_equal(buf, "ACK!", 4);
	assert_int_equal(tls_link_send(sl, "GO", 2, 1000), 0);
	link_read(cl, buf, 2);
	assert_memory_equal(buf, "GO", 2);
	uint64_t t0 = now_ns();
	assert_int_equal(tls_link_recv(sl, buf, 1, 100), -ETIMEDOUT);
	assert_true(now_ns() - t0 >= 90 * MS);
	/* closing the client's descriptor: close_notify, EOF on the server's direct read */
	close(c.fd);
	assert_int_equal(tls_link_recv(sl, buf, 1, 3000), 0);
	close(s.fd);
	tls_link_put(cl);
	tls_link_put(sl);
}

static void test_wrong_name_and_ca(void **state)
{
	struct side s = {0}, c = {0};

	(void)state;
	run_pair("sb", "pr", "mallory", NULL, &s, &c);
	assert_int_equal(s.rc, -EACCES);
	assert_string_equal(s.err, "peer certificate names mallory, expected pr");
	close(s.fd);
	close(c.fd); /* the client finished its side first (TLS 1.3); the server then refused it */

	run_pair("sb", NULL, "other/pr", NULL, &s, &c);
	assert_int_not_equal(s.rc, 0);
	/* GnuTLS's client sends no certificate the server's CA did not sign: refused for that */
	assert_string_equal(s.err, "TLS handshake failed: Certificate is required.");
	assert_int_not_equal(c.rc, 0); /* and the client refuses the server's CA the same way */
	close(s.fd);
	close(c.fd);
}

static void test_deadline(void **state)
{
	struct tls_cfg *c;
	char err[512], id[TLS_ID_MAX];
	int a, b;

	(void)state;
	assert_int_equal(tls_cfg_load(&c, path("sb", NULL), NULL, err, sizeof(err)), 0);
	tcp_pair(&a, &b);
	assert_int_equal(write(a, "\x16\x03", 2), 2); /* the start of a ClientHello, then nothing */
	uint64_t t0 = now_ns();
	assert_int_equal(tls_wrap(c, true, &b, t0 + 300 * MS, id, sizeof(id), err, sizeof(err)), -ETIMEDOUT);
	uint64_t took = now_ns() - t0;
	assert_true(took >= 290 * MS && took < 2000 * MS);
	assert_string_equal(err, "TLS handshake timed out");
	assert_true(b >= 0); /* still the caller's to close */
	close(a);
	close(b);
	tls_cfg_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_loader),
		cmocka_unit_test(test_cert_names),
		cmocka_unit_test(test_handshake_and_relay),
		cmocka_unit_test(test_direct_path_keeps_order),
		cmocka_unit_test(test_wrong_name_and_ca),
		cmocka_unit_test(test_deadline),
	};
	return cmocka_run_group_tests(tests, setup_certs, teardown_certs);
}
