/* test_checkpoint.c — checkpoint capture/apply on real KVM VMs: state round trip, resume, bad input. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/kvm.h>
#include <cmocka.h>

#include "hv/hv.h"
#include "hv/kvm/kvm_state.h"
#include "hv/mem.h"
#include "hv/pvh.h"
#include "hv/dev/uart.h"
#include "replication/checkpoint.h"
#include "replication/stream.h"
#include "tests/unit/need.h"

#define TMEM (64ull << 20)

/* A VM with its UART writing into a pipe we read. */
struct tvm {
	struct vm *vm;
	struct uart *uart;
	int rd, wr;
	char out[65536];
	size_t len;
};

static char guest_path[4096];

static int tvm_create(struct tvm *t, int vcpus, const char *cmdline)
{
	struct vm_config cfg = {.name = "t", .mem_size = TMEM, .nr_vcpus = vcpus};
	struct pvh_image img;
	char err[256];
	int p[2];

	memset(t, 0, sizeof(*t));
	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
		return -errno;
	t->rd = p[0];
	t->wr = p[1];
	if (vm_create(&cfg, &t->vm, err, sizeof(err))) {
		print_message("vm_create: %s\n", err);
		return -1;
	}
	assert_int_equal(uart_attach(t->vm, UART_COM1_BASE, t->wr, &t->uart), 0);
	if (cmdline) {
		assert_int_equal(pvh_load_file(vm_mem(t->vm), guest_path, cmdline, &img, err, sizeof(err)),
				 0);
		assert_int_equal(vm_set_pvh_entry(t->vm, img.entry, img.start_info), 0);
	}
	return 0;
}

static void tvm_destroy(struct tvm *t)
{
	if (t->vm) {
		vm_stop(t->vm, 0);
		vm_wait(t->vm);
	}
	vm_destroy(t->vm); /* frees the attached UART */
	close(t->rd);
	close(t->wr);
	memset(t, 0, sizeof(*t));
}

static void tvm_drain(struct tvm *t)
{
	ssize_t n;

	while (t->len < sizeof(t->out) - 1 &&
	       (n = read(t->rd, t->out + t->len, sizeof(t->out) - 1 - t->len)) > 0)
		t->len += (size_t)n;
	t->out[t->len] = 0;
}

/* Count "dirty:" lines; fill last pass and the max bad seen. */
static int dirty_lines(struct tvm *t, uint64_t *last_pass, uint64_t *bad, uint64_t *first_pass)
{
	int n = 0;

	*bad = 0;
	for (char *p = strstr(t->out, "dirty: pass="); p; p = strstr(p + 1, "dirty: pass=")) {
		unsigned long long pass, rate, b;
		if (!strchr(p, '\n') ||
		    sscanf(p, "dirty: pass=%llu rate=%llu bad=%llu", &pass, &rate, &b) != 3)
			break;
		if (n == 0 && first_pass)
			*first_pass = pass;
		*last_pass = pass;
		if (b > *bad)
			*bad = b;
		n++;
	}
	return n;
}

static int wait_lines(struct tvm *t, int want, int timeout_ms)
{
	uint64_t lp, bad;
	int n = 0;

	for (int waited = 0; waited < timeout_ms; waited += 20) {
		tvm_drain(t);
		n = dirty_lines(t, &lp, &bad, NULL);
		if (n >= want)
			return n;
		poll(NULL, 0, 20);
	}
	return n;
}

/* ---- state comparison --------------------------------------------------------------------------- */

static const uint8_t *find_sec(const uint8_t *blob, size_t used, uint32_t tag, uint32_t *len)
{
	size_t off = KVM_STATE_HDR_SIZE;
	uint32_t t, l;

	while (off + 8 <= used) {
		memcpy(&t, blob + off, 4);
		memcpy(&l, blob + off + 4, 4);
		if (t == tag) {
			*len = l;
			return blob + off + 8;
		}
		off += 8 + ((l + 7) & ~7u);
	}
	return NULL;
}

/* vCPU blobs must be identical except MSR_IA32_TSC (ticks on, may only move forward). */
static void compare_vcpu(const struct ckpt_blob *a, const struct ckpt_blob *b)
{
	size_t off = KVM_STATE_HDR_SIZE;

	assert_int_equal(a->len, b->len);
	while (off + 8 <= a->len) {
		uint32_t tag, len, lb;
		const uint8_t *sa = a->data + off + 8, *sb;

		memcpy(&tag, a->data + off, 4);
		memcpy(&len, a->data + off + 4, 4);
		sb = find_sec(b->data, b->len, tag, &lb);
		if (!sb)
			fail_msg("vCPU section 0x%x missing after the round trip", tag);
		assert_int_equal(len, lb);
		if (tag == KST_MSRS) {
			uint32_t n;
			memcpy(&n, sa, 4);
			for (uint32_t i = 0; i < n; i++) {
				struct kvm_msr_entry ea, eb;
				memcpy(&ea, sa + 8 + i * sizeof(ea), sizeof(ea));
				memcpy(&eb, sb + 8 + i * sizeof(eb), sizeof(eb));
				assert_int_equal(ea.index, eb.index);
				if (ea.index == 0x10) { /* TSC: restored, then ticking */
					if (eb.data < ea.data || eb.data - ea.data > 60000000000ull)
						fail_msg("TSC 0x%llx -> 0x%llx", (unsigned long long)ea.data,
							 (unsigned long long)eb.data);
				} else if (ea.data != eb.data) {
					fail_msg("MSR 0x%x: 0x%llx != 0x%llx", ea.index,
						 (unsigned long long)ea.data, (unsigned long long)eb.data);
				}
			}
		} else if (memcmp(sa, sb, len)) {
			for (uint32_t i = 0; i < len; i++)
				if (sa[i] != sb[i])
					fail_msg("vCPU section 0x%x differs at byte %u: %02x != %02x", tag, i,
						 sa[i], sb[i]);
		}
		off += 8 + ((len + 7) & ~7u);
	}
}

/* kvm-vm blobs: identical except PIT count_load_time and the kvmclock value (documented). */
static void compare_kvm_vm(const struct ckpt_blob *a, const struct ckpt_blob *b)
{
	static const uint32_t same[] = {KST_PIC_MASTER, KST_PIC_SLAVE, KST_IOAPIC};
	const uint8_t *sa, *sb;
	uint32_t la = 0, lb = 0;

	assert_int_equal(a->len, b->len);
	for (int i = 0; i < 3; i++) {
		sa = find_sec(a->data, a->len, same[i], &la);
		sb = find_sec(b->data, b->len, same[i], &lb);
		assert_non_null(sa);
		assert_non_null(sb);
		assert_int_equal(la, lb);
		assert_memory_equal(sa, sb, la);
	}
	sa = find_sec(a->data, a->len, KST_PIT2, &la);
	sb = find_sec(b->data, b->len, KST_PIT2, &lb);
	if (sa || sb) {
		struct kvm_pit_state2 pa, pb;
		assert_true(sa && sb && la == sizeof(pa) && lb == sizeof(pb));
		memcpy(&pa, sa, sizeof(pa));
		memcpy(&pb, sb, sizeof(pb));
		for (int i = 0; i < 3; i++)
			pa.channels[i].count_load_time = pb.channels[i].count_load_time = 0;
		assert_memory_equal(&pa, &pb, sizeof(pa));
	}
	sa = find_sec(a->data, a->len, KST_CLOCK, &la);
	sb = find_sec(b->data, b->len, KST_CLOCK, &lb);
	if (sa || sb) {
		struct kvm_clock_data ca, cb;
		assert_true(sa && sb);
		memcpy(&ca, sa, sizeof(ca));
		memcpy(&cb, sb, sizeof(cb));
		assert_true(cb.clock >= ca.clock);
		assert_true(cb.clock - ca.clock < 30000000000ull);
	}
}

static void compare_state(const struct ckpt_state *a, const struct ckpt_state *b)
{
	assert_int_equal(a->nr_vcpus, b->nr_vcpus);
	assert_int_equal(a->nr_dev, b->nr_dev);
	for (uint32_t i = 0; i < a->nr_vcpus; i++)
		compare_vcpu(&a->vcpu[i], &b->vcpu[i]);
	for (int i = 0; i < a->nr_dev; i++) {
		assert_string_equal(a->dev[i].name, b->dev[i].name);
		assert_int_equal(a->dev[i].kind, b->dev[i].kind);
		if (a->dev[i].kind == CKPT_DEV_KVM) {
			compare_kvm_vm(&a->dev[i], &b->dev[i]);
		} else {
			assert_int_equal(a->dev[i].len, b->dev[i].len);
			assert_memory_equal(a->dev[i].data, b->dev[i].data, a->dev[i].len);
		}
	}
}

static uint64_t msr_value(const struct ckpt_blob *v, uint32_t index)
{
	uint32_t len, n;
	const uint8_t *s = find_sec(v->data, v->len, KST_MSRS, &len);

	if (!s)
		return 0;
	memcpy(&n, s, 4);
	for (uint32_t i = 0; i < n; i++) {
		struct kvm_msr_entry e;
		memcpy(&e, s + 8 + i * sizeof(e), sizeof(e));
		if (e.index == index)
			return e.data;
	}
	return 0;
}

/* Serialize A's memory and state into an in-memory stream (one epoch + END). */
static void write_image(struct tvm *a, const struct ckpt_state *st, struct sr_out *o, bool compress)
{
	struct sr_ctx *w;
	struct sr_header h;

	sr_out_mem(o, 0);
	assert_int_equal(sr_writer_new(&w, o, compress, 1), 0);
	sr_header_from_mem(&h, vm_mem(a->vm), (uint32_t)vm_nr_vcpus(a->vm));
	assert_int_equal(sr_write_header(w, &h), 0);
	assert_int_equal(ckpt_write_all_pages(w, vm_mem(a->vm), compress ? 2 : 1), 0);
	assert_int_equal(ckpt_state_write(w, st), 0);
	assert_int_equal(sr_write_checkpoint_end(w, 1), 0);
	assert_int_equal(sr_write_end(w), 0);
	sr_ctx_free(w);
}

/* Read the image into B: direct (gm) or staged then applied. Returns ckpt_read_epoch's rc. */
static int read_image(struct tvm *b, const uint8_t *buf, size_t len, bool direct, char *err, size_t errlen)
{
	struct ckpt_stage stg = {0};
	struct sr_header h;
	struct sr_ctx *r;
	struct sr_in in;
	int rc;

	sr_in_mem(&in, buf, len);
	assert_int_equal(sr_reader_new(&r, &in), 0);
	rc = sr_read_header(r, &h);
	if (rc) {
		snprintf(err, errlen, "%s", sr_error(r));
		goto out;
	}
	rc = sr_header_check_mem(&h, vm_mem(b->vm), err, errlen);
	if (rc)
		goto out;
	rc = ckpt_read_epoch(r, &stg, direct ? vm_mem(b->vm) : NULL, err, errlen);
	if (rc == 1)
		rc = direct ? ckpt_state_apply(&stg.st, b->vm, err, errlen)
			    : ckpt_stage_apply(&stg, b->vm, err, errlen);
out:
	ckpt_stage_free(&stg);
	sr_ctx_free(r);
	return rc;
}

/* KVM and the test guest are requirements: missing, the test fails (never skips). */
static void need_vm(void)
{
	need_kvm();
	need_guest_elf(guest_path, sizeof(guest_path));
}

/* Boot A with the dirty workload, pause it mid-run, move it into B, compare, run B on. */
static void roundtrip(int vcpus, bool direct, bool compress)
{
	struct tvm a, b;
	struct ckpt_state sa = {0}, sb = {0};
	struct sr_out o;
	uint64_t a_last = 0, b_first = 0, b_last = 0, bad = 0;
	char err[512];

	need_vm();
	assert_int_equal(tvm_create(&a, vcpus, "work=dirty ws=8M pi=100"), 0);
	assert_int_equal(vm_start(a.vm), 0);
	assert_true(wait_lines(&a, 2, 20000) >= 2);
	assert_int_equal(vm_pause(a.vm), 0);
	poll(NULL, 0, 30); /* let the UART bytes of the last exit land */
	tvm_drain(&a);
	assert_true(dirty_lines(&a, &a_last, &bad, NULL) >= 2);
	assert_int_equal(bad, 0);
	assert_int_equal(ckpt_state_capture(&sa, a.vm, err, sizeof(err)), 0);
	write_image(&a, &sa, &o, compress);

	assert_int_equal(tvm_create(&b, vcpus, NULL), 0);
	if (read_image(&b, o.buf, o.len, direct, err, sizeof(err)) != 0)
		fail_msg("restore: %s", err);
	/* Memory identical page for page (A is still paused), except the kvmclock pvclock structures
	 * KVM rewrites when the restored system-time MSR is set (version, flags: they move with time). */
	uint64_t pvclock[HV_MAX_VCPUS];
	for (uint32_t v = 0; v < sa.nr_vcpus; v++)
		pvclock[v] = msr_value(&sa.vcpu[v], 0x4b564d01) & ~1ull;
	for (uint64_t i = 0; i < vm_mem(a.vm)->nr_pages; i++) {
		uint8_t x[4096], y[4096];
		memcpy(x, mem_page_host(vm_mem(a.vm), i), 4096);
		memcpy(y, mem_page_host(vm_mem(b.vm), i), 4096);
		for (uint32_t v = 0; v < sa.nr_vcpus; v++)
			if (pvclock[v] && pvclock[v] >> 12 == i && (pvclock[v] & 4095) <= 4096 - 32) {
				memset(x + (pvclock[v] & 4095), 0, 32);
				memset(y + (pvclock[v] & 4095), 0, 32);
			}
		if (memcmp(x, y, 4096))
			fail_msg("page %llu differs after restore", (unsigned long long)i);
	}
	assert_int_equal(ckpt_state_capture(&sb, b.vm, err, sizeof(err)), 0);
	compare_state(&sa, &sb);

	/* A stays paused: B carries on from where A stopped, with the pass oracle intact. */
	assert_int_equal(vm_start(b.vm), 0);
	assert_true(wait_lines(&b, 3, 20000) >= 3);
	assert_true(dirty_lines(&b, &b_last, &bad, &b_first) >= 3);
	if (bad != 0 || b_first < a_last)
		fail_msg("restored guest: first pass %llu (source last %llu), bad=%llu; output:\n%s",
			 (unsigned long long)b_first, (unsigned long long)a_last, (unsigned long long)bad,
			 b.out);
	assert_true(b_last > b_first);

	ckpt_state_free(&sa);
	ckpt_state_free(&sb);
	sr_out_free(&o);
	tvm_destroy(&a);
	tvm_destroy(&b);
}

static void test_roundtrip_1vcpu_direct(void **state)
{
	(void)state;
	roundtrip(1, true, true);
}

static void test_roundtrip_2vcpu_staged(void **state)
{
	(void)state;
	roundtrip(2, false, false);
}

/* Broken images are refused without touching the target VM (staged mode), or with a clear error. */
static void test_bad_images(void **state)
{
	struct tvm a, b;
	struct ckpt_state sa = {0};
	struct sr_out o;
	char err[512];
	uint8_t *copy;
	int rc;

	(void)state;
	need_vm();
	assert_int_equal(tvm_create(&a, 1, "work=dirty ws=4M pi=100"), 0);
	assert_int_equal(vm_start(a.vm), 0);
	assert_true(wait_lines(&a, 1, 20000) >= 1);
	assert_int_equal(vm_pause(a.vm), 0);
	assert_int_equal(ckpt_state_capture(&sa, a.vm, err, sizeof(err)), 0);
	write_image(&a, &sa, &o, false);
	assert_int_equal(tvm_create(&b, 1, NULL), 0);

	/* Truncated at several points: error, staged target untouched (still all zero). */
	for (size_t cut = 1; cut < o.len; cut = cut * 3 + 7) {
		err[0] = 0;
		rc = read_image(&b, o.buf, cut, false, err, sizeof(err));
		assert_true(rc < 0);
		assert_true(strlen(err) > 0 && !strchr(err, '\n'));
	}
	for (uint64_t i = 0; i < vm_mem(b.vm)->nr_pages; i += 7) {
		static const uint8_t zero[4096];
		assert_memory_equal(mem_page_host(vm_mem(b.vm), i), zero, 4096);
	}

	/* A flipped byte in page data: epoch checksum mismatch. */
	copy = malloc(o.len);
	assert_non_null(copy);
	memcpy(copy, o.buf, o.len);
	copy[o.len / 2] ^= 0x40;
	rc = read_image(&b, copy, o.len, false, err, sizeof(err));
	assert_true(rc < 0);
	free(copy);

	/* State for the wrong number of vCPUs. */
	struct tvm c;
	assert_int_equal(tvm_create(&c, 2, NULL), 0);
	rc = ckpt_state_apply(&sa, c.vm, err, sizeof(err));
	assert_int_equal(rc, -EINVAL);
	assert_non_null(strstr(err, "vCPU"));
	tvm_destroy(&c);

	/* State lacking the kvm-vm record / a device. */
	struct ckpt_state broken = sa;
	broken.nr_dev = 0;
	rc = ckpt_state_apply(&broken, b.vm, err, sizeof(err));
	assert_int_equal(rc, -EINVAL);
	assert_non_null(strstr(err, "kvm-vm"));
	broken.nr_dev = 1; /* kvm-vm only; the UART's record is missing */
	if (vm_devstate_count(b.vm) > 0) {
		rc = ckpt_state_apply(&broken, b.vm, err, sizeof(err));
		assert_int_equal(rc, -EINVAL);
		assert_non_null(strstr(err, "lacks device"));
	}

	ckpt_state_free(&sa);
	sr_out_free(&o);
	tvm_destroy(&a);
	tvm_destroy(&b);
}

/* A hostile stream that names the same page over and over in one epoch must not grow the stage
 * without bound: more staged pages than the VM has is refused. No KVM needed. */
static void test_stage_is_bounded(void **state)
{
	const uint64_t pages = 64;
	uint8_t *ram = calloc(pages, GUEST_PAGE_SIZE), page[GUEST_PAGE_SIZE];
	uint64_t idx[SR_BATCH_PAGES];
	const void *ptr[SR_BATCH_PAGES];
	struct guest_mem gm;
	struct sr_header h;
	struct sr_out out;
	struct sr_in in;
	struct sr_ctx *w, *r;
	struct ckpt_stage stg = {0};
	char err[256] = "";

	(void)state;
	assert_non_null(ram);
	assert_int_equal(mem_init_buffer(&gm, ram, pages * GUEST_PAGE_SIZE), 0);
	memset(page, 0x5a, sizeof(page));
	for (size_t i = 0; i < SR_BATCH_PAGES; i++) {
		idx[i] = 3;
		ptr[i] = page;
	}
	sr_out_mem(&out, 0);
	assert_int_equal(sr_writer_new(&w, &out, false, 0), 0);
	sr_header_from_mem(&h, &gm, 1);
	assert_int_equal(sr_write_header(w, &h), 0);
	assert_int_equal(sr_write_pages(w, idx, ptr, SR_BATCH_PAGES), 0); /* 512 copies: within slack */
	assert_int_equal(sr_write_checkpoint_end(w, 1), 0);
	assert_int_equal(sr_write_pages(w, idx, ptr, SR_BATCH_PAGES), 0); /* 512 + 512 > 64 + 512 */
	assert_int_equal(sr_write_pages(w, idx, ptr, SR_BATCH_PAGES), 0);
	assert_int_equal(sr_write_checkpoint_end(w, 2), 0);
	sr_ctx_free(w);

	sr_in_mem(&in, out.buf, out.len);
	assert_int_equal(sr_reader_new(&r, &in), 0);
	assert_int_equal(sr_read_header(r, &h), 0);
	assert_int_equal(ckpt_read_epoch(r, &stg, NULL, err, sizeof(err)), 1);
	assert_int_equal(stg.n, SR_BATCH_PAGES);
	assert_int_equal(ckpt_read_epoch(r, &stg, NULL, err, sizeof(err)), -E2BIG);
	assert_non_null(strstr(err, "more pages than the VM has"));
	ckpt_stage_free(&stg);
	sr_ctx_free(r);
	sr_out_free(&out);
	mem_destroy(&gm);
	free(ram);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip_1vcpu_direct),
		cmocka_unit_test(test_roundtrip_2vcpu_staged),
		cmocka_unit_test(test_bad_images),
		cmocka_unit_test(test_stage_is_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
