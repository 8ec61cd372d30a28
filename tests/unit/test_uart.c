/* test_uart.c — the 16550 model: output, input FIFO, registers, and save/restore round trip. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "hv/dev/uart.h"

static uint8_t rd(struct uart *u, unsigned off)
{
	uint8_t v = 0;
	uart_io(u, off, &v, 1, false);
	return v;
}

static void wr(struct uart *u, unsigned off, uint8_t v)
{
	uart_io(u, off, &v, 1, true);
}

static void test_output_goes_to_fd(void **state)
{
	int p[2];
	char buf[16] = {0};
	struct uart *u;

	(void)state;
	assert_int_equal(pipe(p), 0);
	u = uart_new(p[1]);
	assert_non_null(u);
	wr(u, 0, 'h');
	wr(u, 0, 'i');
	assert_int_equal(read(p[0], buf, sizeof(buf)), 2);
	assert_string_equal(buf, "hi");
	assert_true(rd(u, 5) & 0x20); /* THRE: always ready */
	uart_free(u);
	close(p[0]);
	close(p[1]);
}

struct tapped {
	char buf[16];
	size_t n;
};

static void tap(void *opaque, uint8_t c)
{
	struct tapped *t = opaque;

	if (t->n < sizeof(t->buf))
		t->buf[t->n++] = (char)c;
}

/* The console tap sees every output byte the fd sees, nothing in loopback or divisor mode, and stops when
 * removed. */
static void test_tap_sees_output(void **state)
{
	struct tapped t = {0};
	char buf[16] = {0};
	struct uart *u;
	int p[2];

	(void)state;
	assert_int_equal(pipe(p), 0);
	u = uart_new(p[1]);
	uart_set_tap(u, tap, &t);
	wr(u, 0, 'o');
	wr(u, 0, 'k');
	wr(u, 3, 0x83); /* DLAB: THR writes set the divisor */
	wr(u, 0, 'x');
	wr(u, 3, 0x03);
	wr(u, 4, 0x10); /* loopback: output goes to the RX FIFO */
	wr(u, 0, 'y');
	wr(u, 4, 0x00);
	uart_set_tap(u, NULL, NULL);
	wr(u, 0, '!');
	assert_int_equal(t.n, 2);
	assert_memory_equal(t.buf, "ok", 2);
	assert_int_equal(read(p[0], buf, sizeof(buf)), 3);
	assert_string_equal(buf, "ok!");
	uart_free(u);
	close(p[0]);
	close(p[1]);
}

static void test_input_fifo_is_bounded_and_ordered(void **state)
{
	struct uart *u = uart_new(-1);
	uint8_t big[UART_RX_FIFO + 50];

	(void)state;
	assert_false(rd(u, 5) & 0x01);
	memset(big, 'x', sizeof(big));
	big[0] = 'a';
	big[1] = 'b';
	assert_int_equal(uart_input(u, big, sizeof(big)), UART_RX_FIFO);
	assert_true(rd(u, 5) & 0x01); /* data ready */
	assert_int_equal(rd(u, 0), 'a');
	assert_int_equal(rd(u, 0), 'b');
	for (int i = 2; i < UART_RX_FIFO; i++)
		assert_int_equal(rd(u, 0), 'x');
	assert_false(rd(u, 5) & 0x01);
	assert_int_equal(rd(u, 0), 0); /* empty FIFO reads 0, never out of bounds */
	uart_free(u);
}

static void test_dlab_and_scratch(void **state)
{
	struct uart *u = uart_new(-1);

	(void)state;
	wr(u, 3, 0x80); /* DLAB */
	wr(u, 0, 0x01);
	wr(u, 1, 0x02);
	assert_int_equal(rd(u, 0), 0x01);
	assert_int_equal(rd(u, 1), 0x02);
	wr(u, 3, 0x03);
	wr(u, 7, 0x5a);
	assert_int_equal(rd(u, 7), 0x5a);
	/* wide and out-of-range accesses are ignored, not fatal */
	uint32_t wide = 0xffffffff;
	assert_int_equal(uart_io(u, 0, &wide, 4, true), 0);
	assert_int_equal(uart_io(u, 9, &wide, 1, true), 0);
	uart_free(u);
}

static void test_save_restore_round_trip(void **state)
{
	struct uart *a = uart_new(-1), *b = uart_new(-1);
	uint8_t s1[UART_STATE_SIZE], s2[UART_STATE_SIZE];
	uint32_t lsr;
	int n1, n2;

	(void)state;
	wr(a, 3, 0x80); /* DLAB: divisor 0x0201 */
	wr(a, 0, 0x01);
	wr(a, 1, 0x02);
	wr(a, 3, 0x1b); /* 8 data bits, 1 stop bit, even parity */
	wr(a, 1, 0x03);
	wr(a, 4, 0x0b);
	wr(a, 7, 0x77);
	uart_input(a, "queued", 6);
	rd(a, 0); /* consume 'q': head moves */
	lsr = rd(a, 5);
	assert_int_equal(lsr & 0x01, 0x01); /* data ready */
	n1 = uart_save(a, s1, sizeof(s1));
	assert_true(n1 > 0);
	assert_int_equal(uart_restore(b, s1, (size_t)n1), 0);
	n2 = uart_save(b, s2, sizeof(s2));
	assert_int_equal(n1, n2);
	assert_memory_equal(s1, s2, (size_t)n1);
	/* field by field through the register interface, as the guest reads them */
	assert_int_equal(rd(b, 3), 0x1b); /* LCR */
	assert_int_equal(rd(b, 1), rd(a, 1)); /* IER */
	assert_int_equal(rd(b, 1) & 0x03, 0x03);
	assert_int_equal(rd(b, 4), rd(a, 4)); /* MCR */
	assert_int_equal(rd(b, 4) & 0x0b, 0x0b);
	assert_int_equal(rd(b, 5), lsr); /* LSR: data ready, transmitter empty */
	assert_int_equal(rd(b, 7), 0x77); /* scratch */
	wr(b, 3, 0x9b); /* DLAB: the divisor */
	assert_int_equal(rd(b, 0), 0x01);
	assert_int_equal(rd(b, 1), 0x02);
	wr(b, 3, 0x1b);
	for (const char *p = "ueued"; *p; p++) /* the FIFO continues where it was */
		assert_int_equal(rd(b, 0), *p);
	assert_int_equal(rd(b, 5) & 0x01, 0); /* and ends there */
	uart_free(a);
	uart_free(b);
}

static void test_restore_validates(void **state)
{
	struct uart *u = uart_new(-1);
	uint8_t s[UART_STATE_SIZE];
	int n;

	(void)state;
	wr(u, 7, 0x42);
	n = uart_save(u, s, sizeof(s));
	assert_true(n > 0);
	assert_int_equal(uart_save(u, s, 8), -ENOSPC);
	assert_int_equal(uart_restore(u, s, (size_t)n - 1), -EINVAL); /* truncated */
	s[0] = 99;
	assert_int_equal(uart_restore(u, s, (size_t)n), -EINVAL); /* version */
	s[0] = 1;
	memset(s + 4 + 8, 0xff, 4); /* rx_head / rx_count absurd */
	assert_int_equal(uart_restore(u, s, (size_t)n), -EINVAL);
	assert_int_equal(rd(u, 7), 0x42); /* untouched */
	uart_free(u);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_output_goes_to_fd),
		cmocka_unit_test(test_tap_sees_output),
		cmocka_unit_test(test_input_fifo_is_bounded_and_ordered),
		cmocka_unit_test(test_dlab_and_scratch),
		cmocka_unit_test(test_save_restore_round_trip),
		cmocka_unit_test(test_restore_validates),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
