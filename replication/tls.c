/* tls.c — TLS 1.3 (GnuTLS, mutual authentication) under the replication and migration sockets. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "replication/tls.h"
#include "common/clock.h"
#include "common/errf.h"

/* TLS 1.3 only; AES-128-GCM first: measured on this CPU (AES-NI, VAES) with GnuTLS 2.7 GB/s per core
 * against 0.35 GB/s for CHACHA20-POLY1305 (`gnutls-cli --benchmark-ciphers`, docs/performance.md);
 * AES-256-GCM is as fast (OpenSSL: 2.58 vs 2.61 GB/s) and stays second, ChaCha for peers without AES
 * instructions. Both ends use this list, so the first entry is what is negotiated. */
#define TLS_PRIORITY "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305"
#define RELAY_BUF (64 * 1024)
#define RELAY_SOCKBUF (1 << 20) /* socketpair buffers: enough for a zstd batch in flight */
#define FLUSH_GRACE_NS 2000000000ull /* engine closed, peer not draining: give up after this */

struct tls_cfg {
	char dir[PATH_MAX];
	char peer[TLS_ID_MAX]; /* "" = any certificate the CA signed */
	gnutls_certificate_credentials_t cred;
	gnutls_priority_t prio;
	atomic_int refs; /* the owner's, plus one per live relay (its session uses cred) */
};

const char *tls_cfg_dir(const struct tls_cfg *c)
{
	return c->dir;
}

const char *tls_cfg_peer_name(const struct tls_cfg *c)
{
	return c->peer[0] ? c->peer : NULL;
}

void tls_cfg_free(struct tls_cfg *c)
{
	if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
		return;
	if (c->cred)
		gnutls_certificate_free_credentials(c->cred);
	if (c->prio)
		gnutls_priority_deinit(c->prio);
	free(c);
}

/* The name a certificate is known by: its first DNS SAN, else its CN. */
static void cert_name(gnutls_x509_crt_t crt, char *id, size_t idlen)
{
	char buf[TLS_ID_MAX];
	size_t sz;
	unsigned crit;

	for (unsigned i = 0;; i++) {
		sz = sizeof(buf) - 1;
		int t = gnutls_x509_crt_get_subject_alt_name(crt, i, buf, &sz, &crit);
		if (t < 0)
			break;
		if (t == GNUTLS_SAN_DNSNAME) {
			snprintf(id, idlen, "%.*s", (int)sz, buf);
			return;
		}
	}
	sz = sizeof(buf);
	if (gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, buf, &sz) == 0)
		snprintf(id, idlen, "%s", buf);
	else
		snprintf(id, idlen, "?");
}

/* Check this host's own certificate: parsable and within its validity dates. */
static int check_own_cert(const char *path, char *err, size_t errlen)
{
	gnutls_datum_t d = {0};
	gnutls_x509_crt_t crt = NULL;
	time_t now = time(NULL);
	int rc = gnutls_load_file(path, &d);

	if (rc < 0)
		return errf(err, errlen, -ENOENT, "tls: cannot read %s: %s", path, gnutls_strerror(rc));
	rc = gnutls_x509_crt_init(&crt);
	if (!rc)
		rc = gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM);
	if (rc < 0) {
		rc = errf(err, errlen, -EINVAL, "tls: %s: %s", path, gnutls_strerror(rc));
	} else if (gnutls_x509_crt_get_expiration_time(crt) < now) {
		rc = errf(err, errlen, -EKEYEXPIRED, "tls: %s has expired", path);
	} else if (gnutls_x509_crt_get_activation_time(crt) > now) {
		rc = errf(err, errlen, -EKEYEXPIRED, "tls: %s is not valid yet", path);
	}
	gnutls_x509_crt_deinit(crt);
	gnutls_free(d.data);
	return rc < 0 ? rc : 0;
}

int tls_cfg_load(struct tls_cfg **out, const char *dir, const char *peer_name, char *err, size_t errlen)
{
	char ca[PATH_MAX + 16], crt[PATH_MAX + 16], key[PATH_MAX + 16];
	struct tls_cfg *c;
	int rc;

	*out = NULL;
	if (!dir || !*dir || strlen(dir) >= PATH_MAX)
		return errf(err, errlen, -EINVAL, "tls: bad --tls-dir");
	if (peer_name && (!*peer_name || strlen(peer_name) >= TLS_ID_MAX))
		return errf(err, errlen, -EINVAL, "tls: bad --tls-peer-name (1..%d characters)",
			    TLS_ID_MAX - 1);
	c = calloc(1, sizeof(*c));
	if (!c)
		return errf(err, errlen, -ENOMEM, "out of memory");
	atomic_init(&c->refs, 1);
	snprintf(c->dir, sizeof(c->dir), "%s", dir);
	snprintf(c->peer, sizeof(c->peer), "%s", peer_name ? peer_name : "");
	snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
	snprintf(crt, sizeof(crt), "%s/cert.pem", dir);
	snprintf(key, sizeof(key), "%s/key.pem", dir);
	const char *ps[] = {ca, crt, key};
	for (int i = 0; i < 3; i++)
		if (access(ps[i], R_OK)) {
			rc = errf(err, errlen, -errno, "tls: cannot read %s: %s", ps[i], strerror(errno));
			goto err;
		}
	rc = check_own_cert(crt, err, errlen);
	if (rc)
		goto err;
	if (gnutls_certificate_allocate_credentials(&c->cred) < 0 ||
	    gnutls_priority_init(&c->prio, TLS_PRIORITY, NULL) < 0) {
		rc = errf(err, errlen, -ENOMEM, "tls: cannot initialise GnuTLS");
		goto err;
	}
	rc = gnutls_certificate_set_x509_trust_file(c->cred, ca, GNUTLS_X509_FMT_PEM);
	if (rc <= 0) {
		rc = errf(err, errlen, -EINVAL, "tls: %s: %s", ca,
			  rc ? gnutls_strerror(rc) : "no CA certificate in it");
		goto err;
	}
	rc = gnutls_certificate_set_x509_key_file(c->cred, crt, key, GNUTLS_X509_FMT_PEM);
	if (rc < 0) {
		rc = errf(err, errlen, -EINVAL, "tls: %s / %s: %s", crt, key, gnutls_strerror(rc));
		goto err;
	}
	*out = c;
	return 0;
err:
	tls_cfg_free(c);
	return rc;
}

int tls_cert_names(const void *pem, size_t len, const char *name)
{
	gnutls_datum_t d = {.data = (void *)pem, .size = (unsigned)len};
	gnutls_x509_crt_t crt;
	int rc;

	if (len > UINT_MAX || gnutls_x509_crt_init(&crt) < 0)
		return -EINVAL;
	rc = gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM);
	if (rc >= 0)
		rc = gnutls_x509_crt_check_hostname2(crt, name, 0) ? 1 : 0;
	else
		rc = -EINVAL;
	gnutls_x509_crt_deinit(crt);
	return rc;
}

void tls_plain_identity(int fd, char *id, size_t idlen)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char h[INET6_ADDRSTRLEN] = "?";

	if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0) {
		if (ss.ss_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, h, sizeof(h));
		else if (ss.ss_family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, h, sizeof(h));
	}
	snprintf(id, idlen, "addr:%s", h);
}

/* ---- handshake ---------------------------------------------------------------------------------- */

/* Wait for the direction GnuTLS wants, until the deadline. 0, or -ETIMEDOUT. */
static int wait_dir(gnutls_session_t s, int fd, uint64_t deadline_ns)
{
	uint64_t t = now_ns();
	struct pollfd p = {.fd = fd, .events = gnutls_record_get_direction(s) ? POLLOUT : POLLIN};
	int n;

	if (t >= deadline_ns)
		return -ETIMEDOUT;
	n = poll(&p, 1, (int)((deadline_ns - t + 999999) / 1000000));
	if (n == 0)
		return -ETIMEDOUT;
	return 0; /* errors and hang-ups: the next GnuTLS call reports them */
}

/* Chain, dates and usage against ca.pem; then the pinned name. Fills id. */
static int verify_peer(const struct tls_cfg *c, gnutls_session_t s, char *id, size_t idlen, char *err,
		       size_t errlen)
{
	const gnutls_datum_t *certs;
	unsigned n = 0, status = 0;
	gnutls_x509_crt_t crt;
	gnutls_datum_t txt;
	int rc = gnutls_certificate_verify_peers2(s, &status);

	if (rc < 0)
		return errf(err, errlen, -EACCES, "peer certificate rejected: %s", gnutls_strerror(rc));
	if (status) {
		if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &txt, 0) < 0)
			return errf(err, errlen, -EACCES, "peer certificate rejected (status 0x%x)", status);
		errf(err, errlen, -EACCES, "peer certificate rejected: %s", txt.data);
		gnutls_free(txt.data);
		return -EACCES;
	}
	certs = gnutls_certificate_get_peers(s, &n);
	if (!certs || !n || gnutls_x509_crt_init(&crt) < 0)
		return errf(err, errlen, -EACCES, "peer presented no certificate");
	rc = gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER);
	if (rc < 0) {
		gnutls_x509_crt_deinit(crt);
		return errf(err, errlen, -EACCES, "peer certificate unreadable: %s", gnutls_strerror(rc));
	}
	cert_name(crt, id, idlen);
	rc = 0;
	if (c->peer[0] && !gnutls_x509_crt_check_hostname2(crt, c->peer, 0))
		rc = errf(err, errlen, -EACCES, "peer certificate names %s, expected %s", id, c->peer);
	else if (c->peer[0])
		snprintf(id, idlen, "%s", c->peer);
	gnutls_x509_crt_deinit(crt);
	return rc;
}

static int handshake(const struct tls_cfg *c, gnutls_session_t s, int fd, uint64_t deadline_ns, char *err,
		     size_t errlen)
{
	int rc;

	gnutls_priority_set(s, c->prio);
	gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, c->cred);
	gnutls_transport_set_int(s, fd);
	for (;;) {
		rc = gnutls_handshake(s);
		if (rc == GNUTLS_E_SUCCESS)
			return 0;
		if (rc != GNUTLS_E_AGAIN && rc != GNUTLS_E_INTERRUPTED)
			return errf(err, errlen, -EPROTO, "TLS handshake failed: %s", gnutls_strerror(rc));
		if (wait_dir(s, fd, deadline_ns))
			return errf(err, errlen, -ETIMEDOUT, "TLS handshake timed out");
	}
}

/* ---- relay and direct path --------------------------------------------------------------------- */

/*
 * Bytes leave the socketpair only under the lock of their direction: the tx relay reads what the
 * engine wrote and sends it holding tx_lock, and tls_link_send first sends whatever is still queued
 * in the socketpair, then its own bytes, holding the same lock. So the peer sees every byte in the
 * order the owner's threads wrote them, whichever path they took, and GnuTLS never has two senders.
 * Receiving: once the owner calls tls_link_recv the rx relay stops (rx_direct) and the owner's
 * thread is the session's one receiver; what the relay had already queued is read first.
 */
struct tls_link {
	struct tls_cfg *cfg; /* a reference: the session uses its credentials */
	gnutls_session_t s;
	int net, app, own; /* TCP socket (non-blocking); relay's end of the socketpair; owner's end */
	pthread_mutex_t tx_lock, rx_lock;
	atomic_int refs;
	atomic_bool dead, rx_direct;
	uint8_t pend[RELAY_BUF]; /* rx relay (rx_lock): decrypted, not yet in the socketpair */
	size_t pend_off, pend_len;
};

static void link_kill(struct tls_link *l)
{
	if (!atomic_exchange(&l->dead, true)) {
		shutdown(l->net, SHUT_RDWR);
		shutdown(l->app, SHUT_RDWR);
	}
}

static void link_put(struct tls_link *l)
{
	if (atomic_fetch_sub(&l->refs, 1) != 1)
		return;
	gnutls_deinit(l->s);
	tls_cfg_free(l->cfg);
	close(l->net);
	close(l->app);
	pthread_mutex_destroy(&l->tx_lock);
	pthread_mutex_destroy(&l->rx_lock);
	free(l);
}

int tls_link_net_fd(const struct tls_link *l)
{
	return l->net;
}

void tls_link_put(struct tls_link *l)
{
	if (l)
		link_put(l);
}

/* Send len bytes as records (tx_lock held); waits for the TCP socket up to timeout_ms per wait
 * (-1: until the link dies, the owner hung up and FLUSH_GRACE_NS passed). 0, -ETIMEDOUT or -EPIPE. */
static int tx_all(struct tls_link *l, const uint8_t *p, size_t len, int timeout_ms)
{
	uint64_t hup_since = 0, t0 = now_ns();

	while (len) {
		ssize_t n = gnutls_record_send(l->s, p, len);

		if (n > 0) {
			p += n;
			len -= (size_t)n;
			t0 = now_ns();
			continue;
		}
		if (n != GNUTLS_E_AGAIN && n != GNUTLS_E_INTERRUPTED)
			return -EPIPE;
		struct pollfd pf[2] = {{.fd = l->net, .events = POLLOUT},
				       {.fd = l->app, .events = POLLRDHUP}};
		if (poll(pf, 2, 100) < 0 && errno != EINTR)
			return -EPIPE;
		if (atomic_load(&l->dead))
			return -EPIPE;
		if (timeout_ms >= 0 && now_ns() - t0 > (uint64_t)timeout_ms * 1000000ull)
			return -ETIMEDOUT;
		if (timeout_ms < 0 && (pf[1].revents & (POLLRDHUP | POLLHUP))) {
			/* The engine gave up on this connection; flush a little longer, then stop. */
			if (!hup_since)
				hup_since = now_ns();
			else if (now_ns() - hup_since > FLUSH_GRACE_NS)
				return -EPIPE;
		}
	}
	return 0;
}

/* Send what the owner's threads queued in the socketpair (tx_lock held). 0, 1 at the owner's EOF,
 * or -errno. */
static int tx_drain(struct tls_link *l, uint8_t *buf, size_t cap, int timeout_ms)
{
	for (;;) {
		ssize_t n = recv(l->app, buf, cap, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -EPIPE;
		if (n == 0)
			return 1;
		int rc = tx_all(l, buf, (size_t)n, timeout_ms);
		if (rc)
			return rc;
	}
}

/* Engine -> peer: encrypt and send what the engine wrote. At the engine's EOF: close_notify. */
static void *tx_main(void *arg)
{
	struct tls_link *l = arg;
	uint8_t *buf = malloc(RELAY_BUF);

	while (buf && !atomic_load(&l->dead)) {
		struct pollfd p = {.fd = l->app, .events = POLLIN};
		if (poll(&p, 1, -1) < 0 && errno != EINTR)
			break;
		pthread_mutex_lock(&l->tx_lock);
		int rc = tx_drain(l, buf, RELAY_BUF, -1);
		if (rc == 1 && !atomic_load(&l->dead))
			(void)gnutls_bye(l->s, GNUTLS_SHUT_WR); /* best effort; non-blocking */
		pthread_mutex_unlock(&l->tx_lock);
		if (rc)
			break;
	}
	free(buf);
	link_kill(l);
	link_put(l);
	return NULL;
}

int tls_link_send(struct tls_link *l, const void *buf, size_t len, int timeout_ms)
{
	uint8_t q[4096];
	int rc;

	pthread_mutex_lock(&l->tx_lock);
	rc = atomic_load(&l->dead) ? -EPIPE : tx_drain(l, q, sizeof(q), timeout_ms);
	if (rc == 1)
		rc = 0; /* the owner shut its write side: its own bytes still go */
	if (!rc)
		rc = tx_all(l, buf, len, timeout_ms);
	pthread_mutex_unlock(&l->tx_lock);
	if (rc == -EPIPE)
		link_kill(l);
	return rc;
}

/* Push the decrypted bytes the relay holds (rx_lock held) into the socketpair without blocking.
 * 0 when all went, 1 when the socketpair is full, -1 when the owner's end is gone. */
static int rx_push(struct tls_link *l)
{
	while (l->pend_off < l->pend_len) {
		ssize_t w = send(l->app, l->pend + l->pend_off, l->pend_len - l->pend_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 1;
		if (w <= 0)
			return -1;
		l->pend_off += (size_t)w;
	}
	return 0;
}

/* Peer -> engine: receive records, decrypt, hand the bytes to the engine, until the owner reads
 * directly (tls_link_recv). EOF/error ends the link. */
static void *rx_main(void *arg)
{
	struct tls_link *l = arg;
	bool direct = false;

	for (;;) {
		ssize_t n = 1; /* > 0: bytes were handed on (or are still held) */
		int full = 0;

		pthread_mutex_lock(&l->rx_lock);
		direct = atomic_load(&l->rx_direct);
		if (!direct && l->pend_off < l->pend_len) {
			full = rx_push(l);
		} else if (!direct) {
			n = gnutls_record_recv(l->s, l->pend, RELAY_BUF);
			l->pend_off = 0;
			l->pend_len = n > 0 ? (size_t)n : 0;
			full = rx_push(l);
		}
		pthread_mutex_unlock(&l->rx_lock);
		if (direct || full < 0)
			break; /* the owner's thread receives from now on / the owner hung up */
		if (full || n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
			struct pollfd p = {.fd = full ? l->app : l->net, .events = full ? POLLOUT : POLLIN};
			if (atomic_load(&l->dead) || (poll(&p, 1, full ? 100 : 1000) < 0 && errno != EINTR))
				break;
			continue;
		}
		if (n <= 0)
			break; /* close_notify, reset, a bad record (MAC failure): the engine sees EOF */
	}
	if (!direct)
		link_kill(l);
	link_put(l);
	return NULL;
}

ssize_t tls_link_recv(struct tls_link *l, void *buf, size_t len, int timeout_ms)
{
	uint64_t end = timeout_ms >= 0 ? now_ns() + (uint64_t)timeout_ms * 1000000ull : 0;
	ssize_t n;

	pthread_mutex_lock(&l->rx_lock);
	atomic_store(&l->rx_direct, true);
	/* what the relay queued before the owner took over comes first, in order */
	n = recv(l->own, buf, len, MSG_DONTWAIT);
	if (n > 0)
		goto out;
	if (l->pend_off < l->pend_len) {
		n = (ssize_t)(l->pend_len - l->pend_off < len ? l->pend_len - l->pend_off : len);
		memcpy(buf, l->pend + l->pend_off, (size_t)n);
		l->pend_off += (size_t)n;
		goto out;
	}
	for (;;) {
		n = gnutls_record_recv(l->s, buf, len);
		if (n > 0)
			break;
		if (n != GNUTLS_E_AGAIN && n != GNUTLS_E_INTERRUPTED) {
			n = 0; /* close_notify, reset, a bad record: EOF, as through the relay */
			link_kill(l);
			break;
		}
		uint64_t t = now_ns();
		if (end && t >= end) {
			n = -ETIMEDOUT;
			break;
		}
		struct pollfd p = {.fd = l->net, .events = POLLIN};
		int ms = end ? (int)((end - t + 999999) / 1000000) : 100;
		if (atomic_load(&l->dead) || (poll(&p, 1, ms > 100 ? 100 : ms) < 0 && errno != EINTR)) {
			n = 0;
			break;
		}
	}
out:
	pthread_mutex_unlock(&l->rx_lock);
	return n;
}

static int start_relay(struct tls_cfg *c, gnutls_session_t s, int net, int *app_out, struct tls_link **lout,
		       char *err, size_t errlen)
{
	int sv[2], sz = RELAY_SOCKBUF, rc;
	pthread_attr_t a;
	pthread_t t;
	struct tls_link *l;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		return errf(err, errlen, -errno, "socketpair: %s", strerror(errno));
	for (int i = 0; i < 2; i++) {
		setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
		setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	}
	l = calloc(1, sizeof(*l));
	if (!l) {
		close(sv[0]);
		close(sv[1]);
		return errf(err, errlen, -ENOMEM, "out of memory");
	}
	*l = (struct tls_link){.cfg = c, .s = s, .net = net, .app = sv[1], .own = sv[0]};
	pthread_mutex_init(&l->tx_lock, NULL);
	pthread_mutex_init(&l->rx_lock, NULL);
	atomic_init(&l->refs, lout ? 3 : 2);
	atomic_fetch_add(&c->refs, 1);
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	rc = pthread_create(&t, &a, tx_main, l);
	if (rc) {
		pthread_attr_destroy(&a);
		close(sv[0]);
		close(sv[1]);
		pthread_mutex_destroy(&l->tx_lock);
		pthread_mutex_destroy(&l->rx_lock);
		free(l);
		atomic_fetch_sub(&c->refs, 1);
		return errf(err, errlen, -rc, "cannot start the TLS relay: %s", strerror(rc));
	}
	rc = pthread_create(&t, &a, rx_main, l);
	pthread_attr_destroy(&a);
	if (rc) {
		/* tx owns one ref; give up the others and let tx tear down (it owns s and net now) */
		atomic_store(&l->refs, 1);
		link_kill(l);
		close(sv[0]);
		*app_out = -1;
		return 1; /* caller must not touch s or net any more */
	}
	*app_out = sv[0];
	if (lout)
		*lout = l;
	return 0;
}

int tls_wrap(struct tls_cfg *c, bool server, int *fd, uint64_t deadline_ns, char *peer_id, size_t idlen,
	     char *err, size_t errlen)
{
	return tls_wrap_link(c, server, fd, deadline_ns, NULL, peer_id, idlen, err, errlen);
}

int tls_wrap_link(struct tls_cfg *c, bool server, int *fd, uint64_t deadline_ns, struct tls_link **link,
		  char *peer_id, size_t idlen, char *err, size_t errlen)
{
	gnutls_session_t s;
	int net = *fd, fl = fcntl(net, F_GETFL), app = -1, rc;

	if (link)
		*link = NULL;

	if (gnutls_init(&s, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL |
				    GNUTLS_NO_TICKETS) < 0)
		return errf(err, errlen, -ENOMEM, "out of memory");
	if (server)
		gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
	fcntl(net, F_SETFL, fl | O_NONBLOCK);
	rc = handshake(c, s, net, deadline_ns, err, errlen);
	if (!rc)
		rc = verify_peer(c, s, peer_id, idlen, err, errlen);
	if (!rc) {
		rc = start_relay(c, s, net, &app, link, err, errlen);
		if (rc > 0) {
			/* the relay owns s and net and is tearing them down; the caller's fd is gone */
			*fd = -1;
			return errf(err, errlen, -EAGAIN, "cannot start the TLS relay");
		}
	}
	if (rc) {
		gnutls_deinit(s);
		fcntl(net, F_SETFL, fl);
		return rc;
	}
	*fd = app;
	return 0;
}
