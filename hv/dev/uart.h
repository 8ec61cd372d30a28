/* uart.h — a 16550-compatible UART: console output to an fd, input queued from the event loop. */
#ifndef DOPPEL_HV_UART_H
#define DOPPEL_HV_UART_H

#include <stddef.h>
#include <stdint.h>

#include "hv/hv.h"

#define UART_COM1_BASE 0x3f8
#define UART_RX_FIFO 256

struct uart;

#define UART_DEV_NAME "uart0" /* its device (and state record) name */

/* Create a UART writing guest output to out_fd (not owned) and attach it to vm as UART_DEV_NAME
 * (hv_dev_ops: ports [base, base+8), reset, save/restore). The VM owns it from then on: vm_destroy
 * frees it; *out stays valid until then. Returns 0 or -errno. Must be called before vm_start. */
int uart_attach(struct vm *vm, uint16_t base, int out_fd, struct uart **out);
/* Free a UART made with uart_new and never attached. NULL-safe. */
void uart_free(struct uart *u);

/* Queue host input for the guest (from the event-loop thread). Returns bytes accepted (the FIFO is
 * bounded; excess input is dropped). */
size_t uart_input(struct uart *u, const void *buf, size_t len);

/* Also hand every output byte to fn(opaque, byte) (NULL: none), called on the vCPU thread with the
 * UART's lock held: it must not block or call back into the UART. Any thread. */
typedef void (*uart_tap_fn)(void *opaque, uint8_t c);
void uart_set_tap(struct uart *u, uart_tap_fn fn, void *opaque);

/* Guest-visible register state, versioned, independent of the output fd (hv/dev/state.h encoding). */
#define UART_STATE_SIZE 280
int uart_save(struct uart *u, void *buf, size_t len); /* returns bytes used or -ENOSPC */
int uart_restore(struct uart *u, const void *buf, size_t len); /* 0 or -EINVAL (nothing changed) */

/* Register-level access, exported for unit tests (same as the io_fn the VM calls). */
int uart_io(void *opaque, uint64_t off, void *data, uint32_t len, bool is_write);
struct uart *uart_new(int out_fd);

#endif
