/* console.c — `doppel console`: the serial console streamed to one client over its control connection. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <json-c/json.h>

#include "hv/dev/uart.h"
#include "common/log.h"
#include "vmm/control.h"
#include "vmm/vmm_priv.h"

/* vCPU thread, UART lock held: one output byte to the client; dropped when its socket is full. */
static void console_tap(void *opaque, uint8_t c)
{
	struct vmm_console *k = opaque;

	pthread_mutex_lock(&k->lock);
	if (k->fd >= 0 && send(k->fd, &c, 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1)
		k->bytes_out++;
	else if (k->fd >= 0)
		k->dropped++;
	pthread_mutex_unlock(&k->lock);
}

static void console_detach(struct vmm *v)
{
	struct vmm_console *k = &v->console;
	int fd;

	if (!k->attached)
		return;
	ev_io_stop(v->loop, &k->rio);
	pthread_mutex_lock(&k->lock);
	fd = k->fd;
	k->fd = -1;
	pthread_mutex_unlock(&k->lock);
	close(fd);
	k->attached = false;
	log_info("console", v->name, "console client detached");
}

static void console_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct vmm *v = w->data;
	char buf[256];
	ssize_t n = recv(w->fd, buf, sizeof(buf), MSG_DONTWAIT);

	(void)loop, (void)revents;
	if (n > 0) {
		v->console.bytes_in += uart_input(v->uart, buf, (size_t)n);
		return;
	}
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	console_detach(v);
}

/* The control connection, its reply sent, becomes the console stream. */
static void console_attach(void *opaque, int fd)
{
	struct vmm *v = opaque;
	struct vmm_console *k = &v->console;

	if (k->attached) { /* cannot happen (one at a time is checked first): be safe */
		close(fd);
		return;
	}
	pthread_mutex_lock(&k->lock);
	k->fd = fd;
	pthread_mutex_unlock(&k->lock);
	k->attached = true;
	k->sessions++;
	ev_io_init(&k->rio, console_read_cb, fd, EV_READ);
	k->rio.data = v;
	ev_io_start(v->loop, &k->rio);
	log_info("console", v->name, "console client attached");
}

struct json_object *vmm_console_cmd(struct vmm *v)
{
	struct json_object *o;

	if (v->console.attached)
		return ctl_refused("%s: a console client is already attached (one at a time)", v->name);
	if (ctl_handover(v->ctl, console_attach, v))
		return ctl_error("internal error: console outside a request");
	o = json_object_new_object();
	json_object_object_add(o, "console", json_object_new_string(v->name));
	return o;
}

void vmm_console_status(struct vmm *v, struct json_object *status)
{
	struct vmm_console *k = &v->console;
	struct json_object *o = json_object_new_object();
	uint64_t out, dropped;

	pthread_mutex_lock(&k->lock);
	out = k->bytes_out;
	dropped = k->dropped;
	pthread_mutex_unlock(&k->lock);
	json_object_object_add(o, "attached", json_object_new_boolean(k->attached));
	json_object_object_add(o, "sessions", json_object_new_int64((int64_t)k->sessions));
	json_object_object_add(o, "bytes_in", json_object_new_int64((int64_t)k->bytes_in));
	json_object_object_add(o, "bytes_out", json_object_new_int64((int64_t)out));
	json_object_object_add(o, "bytes_dropped", json_object_new_int64((int64_t)dropped));
	json_object_object_add(status, "console", o);
}

void vmm_console_init(struct vmm *v)
{
	pthread_mutex_init(&v->console.lock, NULL);
	v->console.fd = -1;
	uart_set_tap(v->uart, console_tap, &v->console);
}

void vmm_console_fini(struct vmm *v)
{
	if (!v->uart)
		return;
	console_detach(v);
	uart_set_tap(v->uart, NULL, NULL);
	pthread_mutex_destroy(&v->console.lock);
}
