/* vmm_http.c — `--metrics ADDR:PORT`: /metrics, / (the status page) and /status.json with libmicrohttpd on its
 * own thread; what it serves is produced on the loop thread (ev_async), never on the epoch path. */
#include <errno.h>
#include <ev.h>
#include <json-c/json.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/errf.h"
#include "common/log.h"
#include "vmm/control.h"
#include "vmm/vmm_priv.h"

#define WAIT_MS 2000 /* a loop busy longer than this (a fence command runs): 503 */

enum page { PAGE_NONE, PAGE_METRICS, PAGE_JSON };

struct vmm_http {
	struct vmm *v;
	struct MHD_Daemon *d;
	ev_async async;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	enum page want; /* [lock] what the HTTP thread waits for */
	uint64_t gen; /* [lock] request number: a late answer to an abandoned request is dropped */
	char *result; /* [lock] */
	bool done, stopping; /* [lock] */
};

/* Loop thread: produce what the HTTP thread asked for. */
static void async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct vmm_http *h = w->data;
	struct json_object *o;
	char *text = NULL;

	(void)loop, (void)revents;
	pthread_mutex_lock(&h->lock);
	enum page want = h->want;
	uint64_t gen = h->gen;
	pthread_mutex_unlock(&h->lock);
	if (want == PAGE_METRICS) {
		text = vmm_metrics_text(h->v);
	} else if (want == PAGE_JSON) {
		o = vmm_page_json(h->v);
		const char *s = o ? json_object_to_json_string_ext(o, CTL_JSON_FLAGS) : NULL;
		text = s ? strdup(s) : NULL;
		json_object_put(o);
	} else {
		return;
	}
	pthread_mutex_lock(&h->lock);
	if (h->gen == gen && h->want == want) {
		h->result = text;
		h->done = true;
		h->want = PAGE_NONE;
		pthread_cond_broadcast(&h->cond);
		text = NULL;
	}
	pthread_mutex_unlock(&h->lock);
	free(text);
}

/* HTTP thread: ask the loop, wait for the answer. NULL on timeout, stop or out of memory. */
static char *ask_loop(struct vmm_http *h, enum page p)
{
	struct timespec ts;
	char *r = NULL;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += WAIT_MS / 1000;
	pthread_mutex_lock(&h->lock);
	h->gen++;
	h->want = p;
	h->done = false;
	h->result = NULL;
	pthread_mutex_unlock(&h->lock);
	ev_async_send(h->v->loop, &h->async);
	pthread_mutex_lock(&h->lock);
	while (!h->done && !h->stopping)
		if (pthread_cond_timedwait(&h->cond, &h->lock, &ts))
			break;
	if (h->done) {
		r = h->result;
		h->result = NULL;
	}
	h->want = PAGE_NONE;
	pthread_mutex_unlock(&h->lock);
	return r;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type, char *body,
			     enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, mode);
	enum MHD_Result rc;

	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, "Content-Type", type);
	MHD_add_response_header(r, "Cache-Control", "no-store");
	rc = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return rc;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
			       const char *version, const char *upload, size_t *upload_size, void **req_cls)
{
	struct vmm_http *h = cls;
	enum page p;
	char *body;

	(void)version, (void)upload;
	if (!*req_cls) { /* first call: headers only */
		*req_cls = h;
		return MHD_YES;
	}
	if (*upload_size) {
		*upload_size = 0;
		return MHD_YES;
	}
	if (strcmp(method, "GET") && strcmp(method, "HEAD"))
		return reply(c, 405, "text/plain", (char *)"only GET\n", MHD_RESPMEM_PERSISTENT);
	if (!strcmp(url, "/"))
		return reply(c, 200, "text/html; charset=utf-8", (char *)vmm_status_page_html,
			     MHD_RESPMEM_PERSISTENT);
	if (!strcmp(url, "/metrics"))
		p = PAGE_METRICS;
	else if (!strcmp(url, "/status.json"))
		p = PAGE_JSON;
	else
		return reply(c, 404, "text/plain", (char *)"not found: try /, /metrics or /status.json\n",
			     MHD_RESPMEM_PERSISTENT);
	body = ask_loop(h, p);
	if (!body)
		return reply(c, 503, "text/plain", (char *)"the VM did not answer in time\n",
			     MHD_RESPMEM_PERSISTENT);
	return reply(c, 200,
		     p == PAGE_METRICS ? "text/plain; version=0.0.4; charset=utf-8" : "application/json",
		     body, MHD_RESPMEM_MUST_FREE);
}

/* A listening TCP socket on "ADDR:PORT" or "[IPv6]:PORT": clear errors (in use, bad address) here,
 * where libmicrohttpd would only fail. Returns the fd or -errno with one line in err. */
static int listen_on(const char *addr, char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV | AI_PASSIVE}, *ai;
	char host[256];
	const char *port, *c;
	int fd, rc, one = 1;

	if (!addr || !*addr || strlen(addr) >= sizeof(host))
		return errf(err, errlen, -EINVAL,
			    "bad --metrics address (expected ADDR:PORT or [IPv6]:PORT)");
	if (addr[0] == '[') {
		c = strchr(addr, ']');
		if (!c || c[1] != ':')
			return errf(err, errlen, -EINVAL, "bad --metrics address '%s' (expected [IPv6]:PORT)",
				    addr);
		snprintf(host, sizeof(host), "%.*s", (int)(c - addr - 1), addr + 1);
		port = c + 2;
	} else {
		c = strrchr(addr, ':');
		if (!c || c == addr || strchr(addr, ':') != c)
			return errf(err, errlen, -EINVAL, "bad --metrics address '%s' (expected ADDR:PORT)",
				    addr);
		snprintf(host, sizeof(host), "%.*s", (int)(c - addr), addr);
		port = c + 1;
	}
	char *end;
	errno = 0;
	long pn = strtol(port, &end, 10);
	if (!*port || *end || errno || pn < 1 || pn > 65535)
		return errf(err, errlen, -EINVAL, "bad port in --metrics '%s' (1..65535)", addr);
	rc = getaddrinfo(host, port, &hints, &ai);
	if (rc)
		return errf(err, errlen, -EINVAL, "bad --metrics address '%s': %s", addr, gai_strerror(rc));
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = errf(err, errlen, -errno, "--metrics: socket: %s", strerror(errno));
		freeaddrinfo(ai);
		return rc;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 16) < 0) {
		rc = errf(err, errlen, -errno, "--metrics: cannot listen on %s: %s", addr, strerror(errno));
		close(fd);
		fd = rc;
	}
	freeaddrinfo(ai);
	return fd;
}

int vmm_http_start(struct vmm *v, const char *addr, char *err, size_t errlen)
{
	struct vmm_http *h;
	int fd = listen_on(addr, err, errlen);

	if (fd < 0)
		return fd;
	h = calloc(1, sizeof(*h));
	if (!h) {
		close(fd);
		return errf(err, errlen, -ENOMEM, "out of memory");
	}
	h->v = v;
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->cond, NULL);
	ev_async_init(&h->async, async_cb);
	h->async.data = h;
	ev_async_start(v->loop, &h->async);
	ev_unref(v->loop); /* the server alone does not keep the loop alive */
	h->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, handler, h,
				MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_LIMIT, (unsigned)16,
				MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
	v->http = h;
	if (!h->d) {
		close(fd);
		vmm_http_stop(v);
		return errf(err, errlen, -EIO, "--metrics: cannot start the HTTP server on %s", addr);
	}
	log_info("vmm", v->name, "metrics and status page on http://%s/", addr);
	return 0;
}

void vmm_http_stop(struct vmm *v)
{
	struct vmm_http *h = v->http;

	if (!h)
		return;
	pthread_mutex_lock(&h->lock);
	h->stopping = true;
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->lock);
	if (h->d)
		MHD_stop_daemon(h->d); /* joins its thread, closes the listening socket */
	ev_ref(v->loop);
	ev_async_stop(v->loop, &h->async);
	free(h->result);
	pthread_cond_destroy(&h->cond);
	pthread_mutex_destroy(&h->lock);
	free(h);
	v->http = NULL;
}
