/* uart.c — 16550 UART model: enough of the register set for Linux's 8250 driver and polled consoles. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hv/uart.h"

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
	struct uart_regs r;
};

struct uart *uart_new(int out_fd)
{
	struct uart *u = calloc(1, sizeof(*u));

	if (!u)
		return NULL;
	pthread_mutex_init(&u->lock, NULL);
	u->out_fd = out_fd;
	u->r.dll = 12; /* 9600 baud, the 8250 reset default */
	u->r.lcr = 0x03;
	return u;
}

static int save_cb(void *opaque, void *buf, size_t len)
{
	return uart_save(opaque, buf, len);
}

static int restore_cb(void *opaque, const void *buf, size_t len)
{
	return uart_restore(opaque, buf, len);
}

int uart_attach(struct vm *vm, uint16_t base, int out_fd, struct uart **out)
{
	struct uart *u = uart_new(out_fd);
	int rc;

	if (!u)
		return -ENOMEM;
	rc = vm_io_register(vm, IO_PIO, base, 8, uart_io, u);
	if (rc == 0)
		rc = vm_devstate_register(vm, "uart0", UART_STATE_SIZE, save_cb, restore_cb, u);
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

static void emit(struct uart *u, uint8_t c)
{
	ssize_t n;

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

int uart_save(struct uart *u, void *buf, size_t len)
{
	uint8_t *p = buf;

	if (len < 4 + sizeof(struct uart_regs))
		return -ENOSPC;
	_Static_assert(4 + sizeof(struct uart_regs) <= UART_STATE_SIZE, "UART_STATE_SIZE too small");
	pthread_mutex_lock(&u->lock);
	memset(p, 0, 4);
	p[0] = UART_STATE_VERSION;
	memcpy(p + 4, &u->r, sizeof(u->r));
	pthread_mutex_unlock(&u->lock);
	return (int)(4 + sizeof(struct uart_regs));
}

int uart_restore(struct uart *u, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	struct uart_regs r;

	if (len != 4 + sizeof(struct uart_regs) || p[0] != UART_STATE_VERSION)
		return -EINVAL;
	memcpy(&r, p + 4, sizeof(r));
	if (r.rx_head >= UART_RX_FIFO || r.rx_count > UART_RX_FIFO)
		return -EINVAL;
	pthread_mutex_lock(&u->lock);
	u->r = r;
	pthread_mutex_unlock(&u->lock);
	return 0;
}
