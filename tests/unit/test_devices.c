/* test_devices.c — device ops, slot/IRQ allocator, state encoder on real KVM: net and a stub. */
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "hv/dev/state.h"
#include "hv/dev/uart.h"
#include "hv/dev/virtio_mmio.h"
#include "hv/dev/virtio_net.h"
#include "hv/hv.h"

#define ENTRY 0x100000u
#define OUT_GPA 0x3000u
#define STUB_ID 0x5354u
#define STUB_STATE_VERSION 1

static bool have_netns; /* the whole test runs in a private network namespace (taps vanish with it) */

static bool have_kvm(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/* ---- a stub virtio-mmio device, written only against hv.h's ops shape and slot allocator ---- */

struct stub {
	struct hv_mmio_slot slot;
	uint32_t reg; /* guest-visible: written at 0x10, read back at 0x10 */
	uint64_t last_off; /* last access, for routing checks */
	unsigned accesses, attaches, resets, detaches;
	bool fail_attach;
};

static int stub_io(void *opaque, uint64_t off, void *data, uint32_t len, bool is_write)
{
	struct stub *s = opaque;
	uint32_t v = 0;

	s->accesses++;
	s->last_off = off;
	if (len != 4)
		return 0;
	if (is_write) {
		memcpy(&v, data, 4);
		if (off == 0x10)
			s->reg = v;
		return 0;
	}
	if (off == VMMIO_MAGIC)
		v = VIRTIO_MMIO_MAGIC;
	else if (off == VMMIO_DEVICE_ID)
		v = STUB_ID;
	else if (off == 0x10)
		v = s->reg;
	memcpy(data, &v, 4);
	return 0;
}

static int stub_attach(struct vm *vm, void *dev, char *err, size_t errlen)
{
	struct stub *s = dev;
	int rc;

	s->attaches++;
	if (s->fail_attach) {
		snprintf(err, errlen, "stub: refused");
		return -EIO;
	}
	rc = vm_mmio_slot_claim(vm, stub_io, s, &s->slot);
	if (rc)
		snprintf(err, errlen, "stub: no slot: %s", strerror(-rc));
	return rc;
}

static void stub_reset(void *dev)
{
	struct stub *s = dev;

	s->resets++;
	s->reg = 0;
}

static size_t stub_size(void *dev)
{
	(void)dev;
	return 8;
}

static int stub_save(void *dev, void *buf, size_t len)
{
	struct stub *s = dev;
	struct st_enc e;

	st_enc_init(&e, buf, len);
	st_put32(&e, STUB_STATE_VERSION);
	st_put32(&e, s->reg);
	return st_enc_done(&e);
}

static int stub_restore(void *dev, const void *buf, size_t len)
{
	struct stub *s = dev;
	struct st_dec d;
	uint32_t ver, reg;

	st_dec_init(&d, buf, len);
	ver = st_get32(&d);
	reg = st_get32(&d);
	if (st_dec_done(&d, true) || ver != STUB_STATE_VERSION)
		return -EINVAL;
	s->reg = reg;
	return 0;
}

static void stub_detach(void *dev)
{
	((struct stub *)dev)->detaches++;
}

static const struct hv_dev_ops stub_ops = {
	.kind = "stub",
	.attach = stub_attach,
	.reset = stub_reset,
	.state_size = stub_size,
	.save = stub_save,
	.restore = stub_restore,
	.detach = stub_detach,
};

/* ---- helpers ---- */

static struct vm *make_vm(void)
{
	struct vm_config cfg = {.name = "dev", .mem_size = 16ull << 20, .nr_vcpus = 1};
	struct vm *vm = NULL;
	char err[256];

	if (vm_create(&cfg, &vm, err, sizeof(err)))
		fail_msg("vm_create: %s", err);
	return vm;
}

static struct virtio_net *attach_net(struct vm *vm, const char *name, const char *ifname, uint8_t last,
				     struct ev_loop *loop)
{
	struct virtio_net_cfg c = {.ifname = ifname, .mac = {0x52, 0x54, 0, 0x12, 0x34, last}};
	struct virtio_net *n = NULL;
	char err[256];

	if (virtio_net_attach(vm, name, &c, loop, &n, err, sizeof(err)))
		fail_msg("virtio_net_attach %s: %s", name, err);
	return n;
}

static uint32_t rd32(struct vm *vm, uint64_t gpa)
{
	uint32_t v = 0;

	assert_int_equal(mem_read(vm_mem(vm), gpa, &v, 4), 0);
	return v;
}

static const struct vm_devstate *devstate(struct vm *vm, const char *name)
{
	for (int i = 0; i < vm_devstate_count(vm); i++)
		if (!strcmp(vm_devstate_get(vm, i)->name, name))
			return vm_devstate_get(vm, i);
	fail_msg("no device state %s", name);
	return NULL;
}

static uint32_t net_status(struct virtio_net *n)
{
	uint32_t v = 0;

	assert_int_equal(virtio_net_io(n, VMMIO_STATUS, &v, 4, false), 0);
	return v;
}

static void net_set_status(struct virtio_net *n, uint32_t v)
{
	assert_int_equal(virtio_net_io(n, VMMIO_STATUS, &v, 4, true), 0);
}

/* ---- tests ---- */

/* virtio-net and a stub side by side: two command-line fragments with distinct windows and GSIs,
 * guest MMIO reaching the right device, and both devices' state round-tripping. */
static void test_net_and_stub(void **state)
{
	struct ev_loop *loop;
	struct vm *vm;
	struct virtio_net *net;
	struct stub st = {0};
	const struct hv_mmio_slot *ns;
	const struct vm_devstate *dn, *ds;
	uint8_t nbuf[512], sbuf[64];
	int nlen, slen;
	char err[256];
	/* 32-bit flat code: eax = [net + DeviceID]; [OUT] = eax; eax = [stub + DeviceID]; [OUT+4] =
	 * eax; [stub + 0x10] = 0x1234abcd; eax = [stub + 0x10]; [OUT+8] = eax; exit(0). */
	uint8_t code[] = {
		0xa1, 0x08, 0x0e, 0xb0, 0xfe, /* mov eax, [0xfeb00e08] */
		0xa3, 0x00, 0x30, 0x00, 0x00, /* mov [0x3000], eax */
		0xa1, 0x08, 0x0c, 0xb0, 0xfe, /* mov eax, [0xfeb00c08] */
		0xa3, 0x04, 0x30, 0x00, 0x00, /* mov [0x3004], eax */
		0xc7, 0x05, 0x10, 0x0c, 0xb0, 0xfe, 0xcd, 0xab, 0x34, 0x12, /* mov dword [0xfeb00c10], imm */
		0xa1, 0x10, 0x0c, 0xb0, 0xfe, /* mov eax, [0xfeb00c10] */
		0xa3, 0x08, 0x30, 0x00, 0x00, /* mov [0x3008], eax */
		0xb0, 0x00, 0x66, 0xba, 0x01, 0x05, 0xee, /* exit port <- 0 */
		0xeb, 0xfe, /* jmp . */
	};

	(void)state;
	if (!have_kvm())
		skip();
	assert_true(have_netns);
	loop = ev_loop_new(EVFLAG_AUTO);
	assert_non_null(loop);
	vm = make_vm();
	net = attach_net(vm, "net0", "dtdev0", 1, loop);
	assert_int_equal(vm_dev_attach(vm, "stub0", &stub_ops, &st, err, sizeof(err)), 0);

	/* The allocator: net keeps QEMU microvm's first slot, the stub gets the next one. */
	ns = virtio_net_slot(net);
	assert_non_null(ns);
	assert_int_equal(ns->base, 0xfeb00e00ull);
	assert_int_equal(ns->gsi, 12);
	assert_int_equal(st.slot.base, 0xfeb00c00ull);
	assert_int_equal(st.slot.gsi, 11);
	assert_int_equal(st.slot.index, 1);
	assert_string_equal(vm_dev_cmdline(vm),
			    "virtio_mmio.device=512@0xfeb00e00:12 virtio_mmio.device=512@0xfeb00c00:11");
	assert_ptr_equal(vm_dev_find(vm, "stub0"), &st);
	assert_non_null(vm_dev_find(vm, "net0"));
	assert_null(vm_dev_find(vm, "net1"));

	/* MMIO from the guest reaches the right device. */
	assert_int_equal(mem_write(vm_mem(vm), ENTRY, code, sizeof(code)), 0);
	assert_int_equal(vm_set_pvh_entry(vm, ENTRY, 0), 0);
	assert_int_equal(vm_start(vm), 0);
	assert_int_equal(vm_wait(vm), 0);
	assert_string_equal(vm_error(vm), "");
	assert_int_equal(rd32(vm, OUT_GPA), VIRTIO_ID_NET);
	assert_int_equal(rd32(vm, OUT_GPA + 4), STUB_ID);
	assert_int_equal(rd32(vm, OUT_GPA + 8), 0x1234abcd);
	assert_int_equal(st.reg, 0x1234abcd);
	assert_int_equal(st.accesses, 3);
	assert_int_equal(st.last_off, 0x10);
	assert_int_equal(net_status(net), 0); /* the stub's write did not land in net */

	/* State: both devices listed in attach order, saved, changed, restored. */
	assert_int_equal(vm_devstate_count(vm), 2);
	assert_string_equal(vm_devstate_get(vm, 0)->name, "net0");
	assert_string_equal(vm_devstate_get(vm, 1)->name, "stub0");
	dn = devstate(vm, "net0");
	ds = devstate(vm, "stub0");
	assert_int_equal(ds->max, 8);
	assert_true(dn->max <= sizeof(nbuf));
	net_set_status(net, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	nlen = dn->save(dn->opaque, nbuf, dn->max);
	slen = ds->save(ds->opaque, sbuf, ds->max);
	assert_true(nlen > 0);
	assert_int_equal(slen, 8);
	assert_int_equal(ds->save(ds->opaque, sbuf, 7), -ENOSPC);

	vm_dev_reset_all(vm); /* both back to power-on state */
	assert_int_equal(st.resets, 1);
	assert_int_equal(st.reg, 0);
	assert_int_equal(net_status(net), 0);

	assert_int_equal(dn->restore(dn->opaque, nbuf, (size_t)nlen), 0);
	assert_int_equal(ds->restore(ds->opaque, sbuf, (size_t)slen), 0);
	assert_int_equal(net_status(net), VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	assert_int_equal(st.reg, 0x1234abcd);
	/* Truncated or oversized records are refused and change nothing. */
	st.reg = 7;
	assert_int_equal(ds->restore(ds->opaque, sbuf, (size_t)slen - 1), -EINVAL);
	assert_int_equal(ds->restore(ds->opaque, sbuf, (size_t)slen + 1), -EINVAL);
	assert_int_equal(dn->restore(dn->opaque, nbuf, (size_t)nlen - 1), -EINVAL);
	assert_int_equal(st.reg, 7);

	vm_destroy(vm); /* detaches both, newest first */
	assert_int_equal(st.detaches, 1);
	ev_loop_destroy(loop);
}

/* Two virtio-net devices: each its own slot, fragment and state record. */
static void test_two_nets(void **state)
{
	struct ev_loop *loop;
	struct vm *vm;
	struct virtio_net *a, *b;
	uint8_t mac[6];

	(void)state;
	if (!have_kvm())
		skip();
	assert_true(have_netns);
	loop = ev_loop_new(EVFLAG_AUTO);
	assert_non_null(loop);
	vm = make_vm();
	a = attach_net(vm, "net0", "dtdev1", 1, loop);
	b = attach_net(vm, "net1", "dtdev2", 2, loop);
	assert_int_equal(virtio_net_slot(a)->base, 0xfeb00e00ull);
	assert_int_equal(virtio_net_slot(b)->base, 0xfeb00c00ull);
	assert_int_equal(virtio_net_slot(b)->gsi, 11);
	assert_string_equal(virtio_net_slot(b)->cmdline, "virtio_mmio.device=512@0xfeb00c00:11");
	assert_string_equal(vm_dev_cmdline(vm),
			    "virtio_mmio.device=512@0xfeb00e00:12 virtio_mmio.device=512@0xfeb00c00:11");
	virtio_net_get_mac(b, mac);
	assert_int_equal(mac[5], 2);
	assert_int_equal(vm_devstate_count(vm), 2);
	assert_string_equal(vm_devstate_get(vm, 1)->name, "net1");
	vm_destroy(vm);
	ev_loop_destroy(loop);
}

/* The allocator hands out HV_MMIO_SLOTS distinct windows/GSIs, then -ENOSPC with nothing taken. */
static void test_slot_exhaustion(void **state)
{
	struct stub st[HV_MMIO_SLOTS + 1];
	struct vm *vm;
	char name[16], err[256];
	const char *cmd;

	(void)state;
	if (!have_kvm())
		skip();
	memset(st, 0, sizeof(st));
	vm = make_vm();
	for (int i = 0; i < HV_MMIO_SLOTS; i++) {
		snprintf(name, sizeof(name), "stub%d", i);
		assert_int_equal(vm_dev_attach(vm, name, &stub_ops, &st[i], err, sizeof(err)), 0);
		assert_int_equal(st[i].slot.index, i);
		assert_int_equal(st[i].slot.base, HV_MMIO_BASE + HV_MMIO_SLOT_SIZE * (HV_MMIO_SLOTS - 1 - i));
		assert_int_equal(st[i].slot.gsi, HV_MMIO_IRQ_BASE + HV_MMIO_SLOTS - 1 - i);
		for (int j = 0; j < i; j++) {
			assert_true(st[i].slot.base != st[j].slot.base);
			assert_true(st[i].slot.gsi != st[j].slot.gsi);
		}
	}
	cmd = vm_dev_cmdline(vm);
	assert_non_null(strstr(cmd, "virtio_mmio.device=512@0xfeb00000:5"));
	assert_int_equal(vm_dev_attach(vm, "stub8", &stub_ops, &st[HV_MMIO_SLOTS], err, sizeof(err)),
			 -ENOSPC);
	assert_true(strlen(err) > 0);
	assert_null(vm_dev_find(vm, "stub8"));
	assert_int_equal(vm_devstate_count(vm), HV_MMIO_SLOTS);
	assert_ptr_equal(vm_dev_cmdline(vm), cmd);
	assert_null(strstr(cmd, ":4"));
	vm_destroy(vm);
	for (int i = 0; i < HV_MMIO_SLOTS; i++)
		assert_int_equal(st[i].detaches, 1);
	assert_int_equal(st[HV_MMIO_SLOTS].detaches, 0); /* never attached: still the caller's */
}

/* Names are unique and 1..31 characters; a refused attach takes nothing; the table is bounded. */
static void test_names_and_table(void **state)
{
	static const struct hv_dev_ops state_only = {
		.kind = "s", .state_size = stub_size, .save = stub_save, .restore = stub_restore};
	static const struct hv_dev_ops half = {.kind = "h", .save = stub_save};
	struct stub a = {0}, b = {0}, c = {0}, many[HV_MAX_DEVS];
	char name[40], err[256];
	struct vm *vm;

	(void)state;
	if (!have_kvm())
		skip();
	vm = make_vm();
	assert_int_equal(vm_dev_attach(vm, "dup", &stub_ops, &a, err, sizeof(err)), 0);
	assert_int_equal(vm_dev_attach(vm, "dup", &stub_ops, &b, err, sizeof(err)), -EEXIST);
	assert_int_equal(b.attaches, 0); /* refused before ops->attach */
	assert_int_equal(vm_dev_attach(vm, "", &stub_ops, &b, err, sizeof(err)), -EINVAL);
	assert_int_equal(vm_dev_attach(vm, NULL, &stub_ops, &b, err, sizeof(err)), -EINVAL);
	memset(name, 'x', 32);
	name[32] = 0;
	assert_int_equal(vm_dev_attach(vm, name, &stub_ops, &b, err, sizeof(err)), -EINVAL);
	name[31] = 0;
	assert_int_equal(vm_dev_attach(vm, name, &state_only, &b, err, sizeof(err)), 0);
	assert_int_equal(vm_dev_attach(vm, "half", &half, &c, err, sizeof(err)), -EINVAL);
	c.fail_attach = true;
	assert_int_equal(vm_dev_attach(vm, "fails", &stub_ops, &c, err, sizeof(err)), -EIO);
	assert_string_equal(err, "stub: refused");
	assert_null(vm_dev_find(vm, "fails"));
	assert_int_equal(vm_devstate_count(vm), 2);
	assert_string_equal(vm_dev_cmdline(vm), "virtio_mmio.device=512@0xfeb00e00:12"); /* only a's */
	memset(many, 0, sizeof(many));
	for (int i = 2; i < HV_MAX_DEVS; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		assert_int_equal(vm_dev_attach(vm, name, &state_only, &many[i], err, sizeof(err)), 0);
	}
	assert_int_equal(vm_dev_attach(vm, "onemore", &state_only, &many[0], err, sizeof(err)), -ENOSPC);
	assert_int_equal(vm_devstate_count(vm), HV_MAX_DEVS);
	assert_null(vm_devstate_get(vm, HV_MAX_DEVS));
	assert_null(vm_devstate_get(vm, -1));
	vm_destroy(vm);
	assert_int_equal(a.detaches, 1);
	assert_int_equal(c.detaches, 0);
}

/* The encoder: exact little-endian bytes, sticky overflow, truncated and oversized input. */
static void test_state_codec(void **state)
{
	uint8_t buf[32], small[5];
	uint8_t want[] = {0xaa, 0x34, 0x12, 0x78, 0x56, 0x34, 0x12, 0xef, 0xcd, 0xab,
			  0x89, 0x67, 0x45, 0x23, 0x01, 'h',  'i',  0,	  0,	0};
	struct st_enc e;
	struct st_dec d;
	char s[2];

	(void)state;
	st_enc_init(&e, buf, sizeof(buf));
	st_put8(&e, 0xaa);
	st_put16(&e, 0x1234);
	st_put32(&e, 0x12345678);
	st_put64(&e, 0x0123456789abcdefull);
	st_put_bytes(&e, "hi", 2);
	st_pad_to(&e, 20);
	assert_int_equal(st_enc_done(&e), 20);
	assert_memory_equal(buf, want, sizeof(want));

	st_dec_init(&d, buf, 20);
	assert_int_equal(st_get8(&d), 0xaa);
	assert_int_equal(st_get16(&d), 0x1234);
	assert_int_equal(st_get32(&d), 0x12345678);
	assert_true(st_get64(&d) == 0x0123456789abcdefull);
	st_get_bytes(&d, s, 2);
	assert_memory_equal(s, "hi", 2);
	assert_int_equal(st_dec_left(&d), 3);
	assert_int_equal(st_dec_done(&d, false), 0);
	assert_int_equal(st_dec_done(&d, true), -EINVAL); /* oversized: 3 bytes left over */
	st_skip_to(&d, 20);
	assert_int_equal(st_dec_done(&d, true), 0);

	/* Overflow is sticky: later puts that would fit do nothing. */
	memset(small, 0x5a, sizeof(small));
	st_enc_init(&e, small, sizeof(small));
	st_put32(&e, 1);
	st_put16(&e, 2); /* does not fit */
	st_put8(&e, 3); /* would fit, but the record is already broken */
	assert_int_equal(st_enc_done(&e), -ENOSPC);
	assert_int_equal(small[4], 0x5a);
	st_enc_init(&e, small, sizeof(small));
	st_pad_to(&e, 6);
	assert_int_equal(st_enc_done(&e), -ENOSPC);
	st_enc_init(&e, NULL, 100);
	st_put8(&e, 1);
	assert_int_equal(st_enc_done(&e), -ENOSPC);

	/* Truncated input: gets past the end read 0 and the record is refused. */
	st_dec_init(&d, buf, 5);
	assert_int_equal(st_get32(&d), 0x781234aau);
	assert_int_equal(st_get16(&d), 0); /* only one byte left: overflow */
	assert_int_equal(st_get8(&d), 0); /* sticky */
	assert_int_equal(st_dec_left(&d), 0);
	assert_int_equal(st_dec_done(&d, false), -EINVAL);
	st_dec_init(&d, buf, 4);
	st_skip_to(&d, 5);
	assert_int_equal(st_dec_done(&d, false), -EINVAL);
	st_dec_init(&d, NULL, 4);
	assert_int_equal(st_dec_done(&d, false), -EINVAL);
}

/* The UART's record through the encoder: 272 bytes, version first, exact length required. */
static void test_uart_record(void **state)
{
	struct uart *u = uart_new(-1), *v = uart_new(-1);
	uint8_t b1[UART_STATE_SIZE], b2[UART_STATE_SIZE], big[UART_STATE_SIZE + 1];
	uint8_t c = 0x83;
	int n;

	(void)state;
	assert_non_null(u);
	assert_non_null(v);
	assert_int_equal(uart_io(u, 3, &c, 1, true), 0); /* LCR with DLAB */
	c = 0x01;
	assert_int_equal(uart_io(u, 0, &c, 1, true), 0); /* DLL = 1 */
	assert_int_equal(uart_input(u, "xyz", 3), 3);
	n = uart_save(u, b1, sizeof(b1));
	assert_int_equal(n, 272);
	assert_int_equal(b1[0], 1);
	assert_int_equal(b1[4 + 1], 0x83); /* lcr */
	assert_int_equal(b1[4 + 5], 0x01); /* dll */
	assert_int_equal(b1[14], 3); /* rx_count, little endian */
	assert_int_equal(b1[15], 0);
	assert_memory_equal(b1 + 16, "xyz", 3);
	assert_int_equal(uart_save(u, b1, 271), -ENOSPC);
	n = uart_save(u, b1, sizeof(b1));
	memcpy(big, b1, (size_t)n);
	big[n] = 0;
	assert_int_equal(uart_restore(v, big, (size_t)n + 1), -EINVAL);
	assert_int_equal(uart_restore(v, b1, (size_t)n - 1), -EINVAL);
	assert_int_equal(uart_restore(v, b1, (size_t)n), 0);
	assert_int_equal(uart_save(v, b2, sizeof(b2)), n);
	assert_memory_equal(b1, b2, (size_t)n);
	uart_free(u);
	uart_free(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_state_codec),	cmocka_unit_test(test_uart_record),
		cmocka_unit_test(test_names_and_table), cmocka_unit_test(test_slot_exhaustion),
		cmocka_unit_test(test_net_and_stub),	cmocka_unit_test(test_two_nets),
	};

	/* Taps made by these tests live and die with a private network namespace. */
	have_netns = unshare(CLONE_NEWNET) == 0;
	if (!have_netns)
		fprintf(stderr, "test_devices: unshare(CLONE_NEWNET): %s\n", strerror(errno));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
