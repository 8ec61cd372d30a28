/* uart.c — 16550 UART model: enough of the register set for Linux's 8250 driver and polled consoles. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/errf.h"
#include "hv/dev/state.h"
#include "hv/dev/uart.h"

enum { RBR_THR = 0, IER = 1, IIR_FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7 };
#define LCR_DLAB 0x80
#define LSR_DR 0x01
#define LSR_THRE 0x20
#define LSR_TEMT 0x40
#define IIR_NONE 0x01
#define IIR_THRI 0x02
#define IIR_RDI 0x04
#define IER_RDI 0x01
#define IER_THRI 0x02
#define MCR_LOOP 0x10
#define UART_STATE_VERSION 1

struct uart_regs {
	uint8_t ier, lcr, mcr, scr, fcr, dll, dlm, thri_pending;
	uint16_t rx_head, rx_count;
	uint8_t rx[UART_RX_FIFO];
};

struct uart {
	pthread_mutex_t lock;
	int out_fd;
	uart_tap_fn tap; /* also sees every output byte (the console client), under lock */
	void *tap_opaque;
	uint16_t base; /* first port, once attached */
	struct uart_regs r;
};

static void regs_init(struct uart_regs *r)
{
	memset(r, 0, sizeof(*r));
	r->dll = 12; /* 9600 baud, the 8250 reset default */
	r->lcr = 0x03;
}

struct uart *uart_new(int out_fd)
{
	struct uart *u = calloc(1, sizeof(*u));

	if (!u)
		return NULL;
	pthread_mutex_init(&u->lock, NULL);
	u->out_fd = out_fd;
	regs_init(&u->r);
	return u;
}

static int attach_cb(struct vm *vm, void *dev, char *err, size_t errlen)
{
	struct uart *u = dev;
	int rc = vm_io_register(vm, IO_PIO, u->base, 8, uart_io, u);

	return rc ? errf(err, errlen, rc, "uart: ports 0x%x-0x%x: %s", u->base, u->base + 7, strerror(-rc))
		  : 0;
}

static void reset_cb(void *dev)
{
	struct uart *u = dev;

	pthread_mutex_lock(&u->lock);
	regs_init(&u->r);
	pthread_mutex_unlock(&u->lock);
}

static size_t state_size_cb(void *dev)
{
	(void)dev;
	return UART_STATE_SIZE;
}

static int save_cb(void *dev, void *buf, size_t len)
{
	return uart_save(dev, buf, len);
}

static int restore_cb(void *dev, const void *buf, size_t len)
{
	return uart_restore(dev, buf, len);
}

static void detach_cb(void *dev)
{
	uart_free(dev);
}

static const struct hv_dev_ops uart_ops = {
	.kind = "uart",
	.attach = attach_cb,
	.reset = reset_cb,
	.state_size = state_size_cb,
	.save = save_cb,
	.restore = restore_cb,
	.detach = detach_cb,
};

int uart_attach(struct vm *vm, uint16_t base, int out_fd, struct uart **out)
{
	struct uart *u = uart_new(out_fd);
	char err[128];
	int rc;

	if (!u)
		return -ENOMEM;
	u->base = base;
	rc = vm_dev_attach(vm, UART_DEV_NAME, &uart_ops, u, err, sizeof(err));
	if (rc) {
		uart_free(u);
		return rc;
	}
	*out = u;
	return 0;
}

void uart_free(struct uart *u)
{
	if (!u)
		return;
	pthread_mutex_destroy(&u->lock);
	free(u);
}

static uint8_t iir(const struct uart_regs *r)
{
	if ((r->ier & IER_RDI) && r->rx_count)
		return IIR_RDI;
	if ((r->ier & IER_THRI) && r->thri_pending)
		return IIR_THRI;
	return IIR_NONE;
}

void uart_set_tap(struct uart *u, uart_tap_fn fn, void *opaque)
{
	pthread_mutex_lock(&u->lock);
	u->tap = fn;
	u->tap_opaque = opaque;
	pthread_mutex_unlock(&u->lock);
}

static void emit(struct uart *u, uint8_t c)
{
	ssize_t n;

	if (u->tap)
		u->tap(u->tap_opaque, c);
	if (u->out_fd < 0)
		return;
	do
		n = write(u->out_fd, &c, 1);
	while (n < 0 && errno == EINTR);
}

static uint8_t rx_pop(struct uart_regs *r)
{
	uint8_t c;

	if (!r->rx_count)
		return 0;
	c = r->rx[r->rx_head];
	r->rx_head = (uint16_t)((r->rx_head + 1) % UART_RX_FIFO);
	r->rx_count--;
	return c;
}

static void rx_push(struct uart_regs *r, uint8_t c)
{
	if (r->rx_count < UART_RX_FIFO) {
		r->rx[(r->rx_head + r->rx_count) % UART_RX_FIFO] = c;
		r->rx_count++;
	}
}

int uart_io(void *opaque, uint64_t off, void *data, uint32_t len, bool is_write)
{
	struct uart *u = opaque;
	struct uart_regs *r = &u->r;
	uint8_t *v = data;

	if (len != 1 || off > 7)
		return 0; /* wide accesses to a byte device: ignored, reads stay 0 */
	pthread_mutex_lock(&u->lock);
	if (is_write) {
		switch (off) {
		case RBR_THR:
			if (r->lcr & LCR_DLAB)
				r->dll = *v;
			else if (r->mcr & MCR_LOOP)
				rx_push(r, *v);
			else {
				emit(u, *v);
				r->thri_pending = 1;
			}
			break;
		case IER:
			if (r->lcr & LCR_DLAB)
				r->dlm = *v;
			else {
				r->ier = *v & 0x0f;
				r->thri_pending = 1;
			}
			break;
		case IIR_FCR:
			r->fcr = *v;
			if (*v & 0x02)
				r->rx_count = 0;
			break;
		case LCR:
			r->lcr = *v;
			break;
		case MCR:
			r->mcr = *v & 0x1f;
			break;
		case SCR:
			r->scr = *v;
			break;
		default:
			break; /* LSR and MSR are read-only */
		}
	} else {
		switch (off) {
		case RBR_THR:
			*v = (r->lcr & LCR_DLAB) ? r->dll : rx_pop(r);
			break;
		case IER:
			*v = (r->lcr & LCR_DLAB) ? r->dlm : r->ier;
			break;
		case IIR_FCR:
			*v = iir(r) | ((r->fcr & 1) ? 0xc0 : 0);
			if (*v == IIR_THRI)
				r->thri_pending = 0;
			break;
		case LCR:
			*v = r->lcr;
			break;
		case MCR:
			*v = r->mcr;
			break;
		case LSR:
			*v = LSR_THRE | LSR_TEMT | (r->rx_count ? LSR_DR : 0);
			break;
		case MSR:
			*v = (r->mcr & MCR_LOOP) ? (uint8_t)((r->mcr & 0x0f) << 4) : 0xb0; /* DCD DSR CTS */
			break;
		case SCR:
			*v = r->scr;
			break;
		}
	}
	pthread_mutex_unlock(&u->lock);
	return 0;
}

size_t uart_input(struct uart *u, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	size_t n = 0;

	pthread_mutex_lock(&u->lock);
	while (n < len && u->r.rx_count < UART_RX_FIFO)
		rx_push(&u->r, p[n++]);
	pthread_mutex_unlock(&u->lock);
	return n;
}

/* Record (version 1, 272 bytes): u8 version, 3 zero bytes, then u8 ier lcr mcr scr fcr dll dlm
 * thri_pending, u16 rx_head, u16 rx_count, u8 rx[UART_RX_FIFO]. */
#define UART_STATE_LEN (4 + 8 + 4 + UART_RX_FIFO)
_Static_assert(UART_STATE_LEN <= UART_STATE_SIZE, "UART_STATE_SIZE too small");

int uart_save(struct uart *u, void *buf, size_t len)
{
	struct st_enc e;
	const struct uart_regs *r = &u->r;

	st_enc_init(&e, buf, len);
	pthread_mutex_lock(&u->lock);
	st_put8(&e, UART_STATE_VERSION);
	st_pad_to(&e, 4);
	st_put8(&e, r->ier);
	st_put8(&e, r->lcr);
	st_put8(&e, r->mcr);
	st_put8(&e, r->scr);
	st_put8(&e, r->fcr);
	st_put8(&e, r->dll);
	st_put8(&e, r->dlm);
	st_put8(&e, r->thri_pending);
	st_put16(&e, r->rx_head);
	st_put16(&e, r->rx_count);
	st_put_bytes(&e, r->rx, UART_RX_FIFO);
	pthread_mutex_unlock(&u->lock);
	return st_enc_done(&e);
}

int uart_restore(struct uart *u, const void *buf, size_t len)
{
	struct st_dec d;
	struct uart_regs r;

	st_dec_init(&d, buf, len);
	if (st_get8(&d) != UART_STATE_VERSION)
		return -EINVAL;
	st_skip_to(&d, 4);
	r.ier = st_get8(&d);
	r.lcr = st_get8(&d);
	r.mcr = st_get8(&d);
	r.scr = st_get8(&d);
	r.fcr = st_get8(&d);
	r.dll = st_get8(&d);
	r.dlm = st_get8(&d);
	r.thri_pending = st_get8(&d);
	r.rx_head = st_get16(&d);
	r.rx_count = st_get16(&d);
	st_get_bytes(&d, r.rx, UART_RX_FIFO);
	if (st_dec_done(&d, true) || r.rx_head >= UART_RX_FIFO || r.rx_count > UART_RX_FIFO)
		return -EINVAL;
	pthread_mutex_lock(&u->lock);
	u->r = r;
	pthread_mutex_unlock(&u->lock);
	return 0;
}
