/* migrate_physics.c — bench: what bounds post-copy here: loopback link rate, zstd rate, install rate.
 *
 * Not built by the Makefile (bench/migrate_physics.sh builds and runs it). Prints one JSON object:
 *  link_*:     200 MiB over loopback TCP (sender thread -> receiver), raw pages, MiB/s
 *  zstd_*:     ZSTD level 1 compress of 4 KiB pages, single thread, pages/s and ratio; "guest" pages are
 *              the test guest's (two words, zeros elsewhere), "random" are fill=random pages
 *  install_*:  destination install of 200 MiB into a memfd registered with userfaultfd MINOR after a
 *              zap (MADV_DONTNEED): pwritev of the run into the memfd + one UFFDIO_CONTINUE, per run of
 *              1, 32, 256 and 4096 pages; pages/s (nobody waits on the faults: the pure install cost)
 *  zap_ms:     MADV_DONTNEED of 200 MiB (making the stale set fault)
 * Each figure is measured REPS times; the JSON gives every repetition (the script prints median/spread).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#define PG 4096ul
#define MIB (1ul << 20)
#define SIZE (200 * MIB)
#define NPG (SIZE / PG)
#define REPS 5

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "migrate_physics: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* ---- loopback link ---- */
struct link_arg {
	int fd;
	uint8_t *buf;
};

static void *link_rx(void *a)
{
	struct link_arg *l = a;
	size_t got = 0;

	while (got < SIZE) {
		ssize_t n = recv(l->fd, l->buf, 4 * MIB, 0);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	return NULL;
}

static double link_once(const uint8_t *src, uint8_t *rbuf)
{
	int ls = socket(AF_INET, SOCK_STREAM, 0), c, a, one = 1;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	pthread_t th;

	if (ls < 0 || bind(ls, (void *)&sa, sizeof(sa)) || listen(ls, 1) || getsockname(ls, (void *)&sa, &sl))
		die("listen");
	c = socket(AF_INET, SOCK_STREAM, 0);
	if (c < 0 || connect(c, (void *)&sa, sizeof(sa)))
		die("connect");
	a = accept(ls, NULL, NULL);
	if (a < 0)
		die("accept");
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct link_arg l = {.fd = a, .buf = rbuf};
	double t0 = now();
	pthread_create(&th, NULL, link_rx, &l);
	for (size_t off = 0; off < SIZE;) { /* 1 MiB writes: the post-copy push's frame size */
		ssize_t n = send(c, src + off, MIB, 0);
		if (n <= 0)
			die("send");
		off += (size_t)n;
	}
	shutdown(c, SHUT_WR);
	pthread_join(th, NULL);
	double dt = now() - t0;
	close(a);
	close(c);
	close(ls);
	return SIZE / MIB / dt;
}

/* ---- zstd ---- */
static double zstd_once(const uint8_t *src, double *ratio)
{
	ZSTD_CCtx *cx = ZSTD_createCCtx();
	size_t cap = ZSTD_compressBound(PG), out = 0;
	uint8_t *dst = malloc(cap);
	unsigned n = 16384; /* 64 MiB */
	double t0 = now();

	for (unsigned i = 0; i < n; i++) {
		size_t r = ZSTD_compressCCtx(cx, dst, cap, src + (size_t)i * PG, PG, 1);
		if (ZSTD_isError(r))
			die("zstd");
		out += r;
	}
	double dt = now() - t0;
	*ratio = (double)n * PG / (double)out;
	free(dst);
	ZSTD_freeCCtx(cx);
	return n / dt;
}

/* ---- install: memfd + userfaultfd MINOR ---- */
static double install_once(int mfd, uint8_t *map, int uffd, const uint8_t *src, unsigned run, double *zap_ms)
{
	double t0 = now();
	if (madvise(map, SIZE, MADV_DONTNEED))
		die("madvise");
	*zap_ms = (now() - t0) * 1e3;
	struct iovec iov[1024];
	t0 = now();
	for (unsigned long p = 0; p < NPG; p += run) {
		/* pwritev of the run, up to 1024 pages per call (IOV_MAX) */
		for (unsigned done = 0; done < run;) {
			unsigned k = run - done > 1024 ? 1024 : run - done;
			for (unsigned i = 0; i < k; i++)
				iov[i] = (struct iovec){(void *)(src + (p + done + i) * PG), PG};
			if (pwritev(mfd, iov, (int)k, (off_t)((p + done) * PG)) != (ssize_t)(k * PG))
				die("pwritev");
			done += k;
		}
		struct uffdio_continue c = {.range = {.start = (uintptr_t)map + p * PG, .len = run * PG}};
		if (ioctl(uffd, UFFDIO_CONTINUE, &c))
			die("UFFDIO_CONTINUE");
	}
	return NPG / (now() - t0);
}

static void arr(const char *k, const double *v, int n, int last)
{
	printf("  \"%s\": [", k);
	for (int i = 0; i < n; i++)
		printf("%s%.1f", i ? ", " : "", v[i]);
	printf("]%s\n", last ? "" : ",");
}

int main(void)
{
	uint8_t *guest = malloc(SIZE), *rnd = malloc(SIZE), *rbuf = malloc(4 * MIB);
	uint64_t x = 0x9e3779b97f4a7c15ull;
	double v[REPS], r[REPS];

	if (!guest || !rnd || !rbuf)
		die("malloc");
	memset(guest, 0, SIZE);
	for (size_t i = 0; i < NPG; i++) {
		uint64_t *w = (uint64_t *)(guest + i * PG), *q = (uint64_t *)(rnd + i * PG);
		w[0] = (7ull << 32) | i;
		w[PG / 8 - 1] = ~w[0];
		for (size_t j = 0; j < PG / 8; j++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			q[j] = x;
		}
	}
	printf("{\n");
	for (int i = 0; i < REPS; i++)
		v[i] = link_once(rnd, rbuf);
	arr("link_raw_mib_s", v, REPS, 0);
	for (int i = 0; i < REPS; i++)
		v[i] = zstd_once(guest, &r[i]);
	arr("zstd_guest_pages_s", v, REPS, 0);
	arr("zstd_guest_ratio", r, REPS, 0);
	for (int i = 0; i < REPS; i++)
		v[i] = zstd_once(rnd, &r[i]);
	arr("zstd_random_pages_s", v, REPS, 0);
	arr("zstd_random_ratio", r, REPS, 0);

	int mfd = memfd_create("physics", MFD_CLOEXEC);
	if (mfd < 0 || ftruncate(mfd, SIZE))
		die("memfd");
	uint8_t *map = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (map == MAP_FAILED)
		die("mmap");
	memset(map, 1, SIZE); /* page cache populated, as on the destination after its prefault */
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0)
		die("userfaultfd");
	struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_MINOR_SHMEM};
	if (ioctl(uffd, UFFDIO_API, &api))
		die("UFFDIO_API");
	struct uffdio_register reg = {.range = {.start = (uintptr_t)map, .len = SIZE},
				      .mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR};
	if (ioctl(uffd, UFFDIO_REGISTER, &reg))
		die("UFFDIO_REGISTER");
	static const unsigned runs[] = {1, 32, 256, 1024};
	double zap[REPS];
	for (unsigned k = 0; k < 4; k++) {
		char key[64];
		for (int i = 0; i < REPS; i++)
			v[i] = install_once(mfd, map, uffd, rnd, runs[k], &zap[i]);
		snprintf(key, sizeof(key), "install_run%u_pages_s", runs[k]);
		arr(key, v, REPS, 0);
	}
	arr("zap_200mib_ms", zap, REPS, 1);
	printf("}\n");
	return 0;
}
