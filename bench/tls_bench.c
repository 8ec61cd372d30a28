/* tls_bench.c — GnuTLS vs OpenSSL 3: TLS 1.3 (AES-256-GCM) bulk throughput over loopback TCP. */
/*
 * Usage: tls_bench DIR [MiB]   (DIR holds ca.pem cert.pem key.pem; the same credentials both ways)
 * For each library, a child process accepts and reads everything, the parent connects and writes
 * MiB (default 1024) in 64 KiB records; prints one JSON line per library with MB/s (receiver side,
 * first byte to last). Both directions are mutually authenticated as doppel does. The kernel's
 * kTLS (TCP_ULP "tls") is reported too: when absent both libraries encrypt in user space.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (64 * 1024)

static const char *dir;
static char ca[512], crt[512], key[512];

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "tls_bench: %s\n", what);
	exit(1);
}

static int listen_any(int *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || bind(fd, (void *)&a, sizeof(a)) || listen(fd, 1) || getsockname(fd, (void *)&a, &al))
		die("listen");
	*port = ntohs(a.sin_port);
	return fd;
}

static int connect_to(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				.sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	if (fd < 0 || connect(fd, (void *)&a, sizeof(a)))
		die("connect");
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static bool have_ktls(void)
{
	int port, l = listen_any(&port), c = connect_to(port);
	bool ok = setsockopt(c, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls")) == 0;
	close(c);
	close(l);
	return ok;
}

/* ---- GnuTLS ---- */
static gnutls_session_t gt_session(int fd, bool server, gnutls_certificate_credentials_t *cred)
{
	gnutls_session_t s;
	gnutls_certificate_allocate_credentials(cred);
	if (gnutls_certificate_set_x509_trust_file(*cred, ca, GNUTLS_X509_FMT_PEM) < 1 ||
	    gnutls_certificate_set_x509_key_file(*cred, crt, key, GNUTLS_X509_FMT_PEM) < 0)
		die("gnutls credentials");
	gnutls_init(&s, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NO_TICKETS);
	gnutls_priority_set_direct(s, "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-256-GCM", NULL);
	gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, *cred);
	if (server)
		gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
	gnutls_transport_set_int(s, fd);
	int rc;
	do
		rc = gnutls_handshake(s);
	while (rc < 0 && !gnutls_error_is_fatal(rc));
	if (rc < 0)
		die(gnutls_strerror(rc));
	unsigned st;
	if (gnutls_certificate_verify_peers3(s, "hosta", &st) < 0 || st)
		die("gnutls verify");
	return s;
}

static double run_gnutls(size_t total)
{
	int port, l = listen_any(&port), p[2];
	char *buf = calloc(1, CHUNK);
	gnutls_certificate_credentials_t cred;
	double mbs = 0;

	if (pipe(p))
		die("pipe");
	pid_t pid = fork();
	if (pid == 0) {
		int fd = accept(l, NULL, NULL);
		gnutls_session_t s = gt_session(fd, true, &cred);
		size_t got = 0;
		double t0 = 0;
		while (got < total) {
			ssize_t n = gnutls_record_recv(s, buf, CHUNK);
			if (n <= 0)
				die("gnutls recv");
			if (!got)
				t0 = now_s();
			got += (size_t)n;
		}
		mbs = (double)total / 1e6 / (now_s() - t0);
		if (write(p[1], &mbs, sizeof(mbs)) != sizeof(mbs))
			die("pipe write");
		_exit(0);
	}
	int fd = connect_to(port);
	gnutls_session_t s = gt_session(fd, false, &cred);
	for (size_t sent = 0; sent < total;) {
		ssize_t n = gnutls_record_send(s, buf, CHUNK); /* one record (<= 16 KiB) per call */
		if (n <= 0)
			die("gnutls send");
		sent += (size_t)n;
	}
	if (read(p[0], &mbs, sizeof(mbs)) != sizeof(mbs))
		die("pipe read");
	waitpid(pid, NULL, 0);
	gnutls_deinit(s);
	close(fd);
	close(l);
	free(buf);
	return mbs;
}

/* ---- OpenSSL ---- */
static SSL *os_session(int fd, bool server)
{
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_ciphersuites(ctx, "TLS_AES_256_GCM_SHA384");
	SSL_CTX_set_options(ctx, SSL_OP_ENABLE_KTLS);
	if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1 ||
	    SSL_CTX_use_certificate_file(ctx, crt, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
		die("openssl credentials");
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL *s = SSL_new(ctx);
	SSL_set_fd(s, fd);
	if (!server)
		SSL_set1_host(s, "hosta");
	if ((server ? SSL_accept(s) : SSL_connect(s)) != 1)
		die("openssl handshake");
	return s;
}

static double run_openssl(size_t total)
{
	int port, l = listen_any(&port), p[2];
	char *buf = calloc(1, CHUNK);
	double mbs = 0;

	if (pipe(p))
		die("pipe");
	pid_t pid = fork();
	if (pid == 0) {
		int fd = accept(l, NULL, NULL);
		SSL *s = os_session(fd, true);
		size_t got = 0;
		double t0 = 0;
		while (got < total) {
			int n = SSL_read(s, buf, CHUNK);
			if (n <= 0)
				die("openssl read");
			if (!got)
				t0 = now_s();
			got += (size_t)n;
		}
		mbs = (double)total / 1e6 / (now_s() - t0);
		if (write(p[1], &mbs, sizeof(mbs)) != sizeof(mbs))
			die("pipe write");
		_exit(0);
	}
	int fd = connect_to(port);
	SSL *s = os_session(fd, false);
	for (size_t sent = 0; sent < total; sent += CHUNK)
		if (SSL_write(s, buf, CHUNK) != CHUNK)
			die("openssl write");
	if (read(p[0], &mbs, sizeof(mbs)) != sizeof(mbs))
		die("pipe read");
	waitpid(pid, NULL, 0);
	SSL_free(s);
	close(fd);
	close(l);
	free(buf);
	return mbs;
}

int main(int argc, char **argv)
{
	size_t mib = 1024;

	if (argc < 2)
		die("usage: tls_bench DIR [MiB]");
	dir = argv[1];
	if (argc > 2)
		mib = strtoul(argv[2], NULL, 10);
	snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
	snprintf(crt, sizeof(crt), "%s/cert.pem", dir);
	snprintf(key, sizeof(key), "%s/key.pem", dir);
	bool k = have_ktls();
	size_t total = mib << 20;
	for (int i = 0; i < 3; i++) { /* interleaved */
		printf("{\"lib\": \"gnutls %s\", \"run\": %d, \"MiB\": %zu, \"ktls\": %s, \"MBps\": %.0f}\n",
		       gnutls_check_version(NULL), i, mib, k ? "true" : "false", run_gnutls(total));
		fflush(stdout);
		printf("{\"lib\": \"%s\", \"run\": %d, \"MiB\": %zu, \"ktls\": %s, \"MBps\": %.0f}\n",
		       OpenSSL_version(OPENSSL_VERSION), i, mib, k ? "true" : "false", run_openssl(total));
		fflush(stdout);
	}
	return 0;
}
