/* test_virtio_blk.c — virtio-blk over crafted rings: validation, I/O, errors, GET_ID, discard, state, pause/resume, --disk. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "hv/dev/virtio_blk.h"
#include "hv/mem.h"
#include "tests/unit/vblk_fx.h"
#include "vmm/diskopt.h"

static void test_read_write_flush(void **state)
{
	struct fx *f = *state;
	uint8_t back[4096];

	for (unsigned i = 0; i < 4096; i++)
		gp(f, DATA(0))[i] = (uint8_t)(i * 7 + 1);
	req(f, 0, VIRTIO_BLK_T_OUT, 8, 4096, false);
	run(f);
	assert_int_equal(used_idx(f), 1);
	assert_int_equal(*gp(f, STATUS(0)), VIRTIO_BLK_S_OK);
	assert_int_equal(pread(f->fd, back, 4096, 8 * 512), 4096);
	assert_memory_equal(back, gp(f, DATA(0)), 4096);

	uint64_t *dirty = calloc(RAM_SIZE / 4096 / 64 + 1, 8);
	mem_dev_dirty_take(&f->gm, dirty); /* clear */
	memset(dirty, 0, RAM_SIZE / 4096 / 8 + 8);
	req(f, 1, VIRTIO_BLK_T_IN, 8, 4096, true);
	req(f, 2, VIRTIO_BLK_T_FLUSH, 0, 0, false);
	run(f);
	assert_int_equal(used_idx(f), 3);
	assert_int_equal(*gp(f, STATUS(1)), VIRTIO_BLK_S_OK);
	assert_int_equal(*gp(f, STATUS(2)), VIRTIO_BLK_S_OK);
	assert_memory_equal(gp(f, DATA(1)), back, 4096);
	assert_int_equal(used_len_of(f, 3), 4097);
	assert_int_equal(used_len_of(f, 6), 1);
	/* the read data, the status byte and the used ring were marked device-dirty */
	mem_dev_dirty_take(&f->gm, dirty);
	assert_true(dirty[(DATA(1) / 4096) / 64] & (1ull << ((DATA(1) / 4096) % 64)));
	assert_true(dirty[(STATUS(1) / 4096) / 64] & (1ull << ((STATUS(1) / 4096) % 64)));
	assert_true(dirty[(USED / 4096) / 64] & (1ull << ((USED / 4096) % 64)));
	free(dirty);
	assert_true(f->irqs > 0); /* NO_INTERRUPT not set: interrupts raised */
}

static void test_bad_requests(void **state)
{
	struct fx *f = *state;
	struct virtio_blk_stats st;

	req(f, 0, VIRTIO_BLK_T_IN, DISK_SECTORS, 512, true); /* one past the end */
	req(f, 1, VIRTIO_BLK_T_IN, DISK_SECTORS - 1, 512, true); /* the last sector: fine */
	req(f, 2, VIRTIO_BLK_T_OUT, UINT64_MAX, 512, false); /* overflowing sector */
	req(f, 3, VIRTIO_BLK_T_OUT, 0, 100, false); /* not a multiple of 512 */
	req(f, 4, 77, 0, 0, false); /* unknown type */
	req(f, 5, VIRTIO_BLK_T_IN, 0, 512, false); /* read into a device-readable buffer */
	run(f);
	assert_int_equal(used_idx(f), 6);
	assert_int_equal(*gp(f, STATUS(0)), VIRTIO_BLK_S_IOERR);
	assert_int_equal(*gp(f, STATUS(1)), VIRTIO_BLK_S_OK);
	assert_int_equal(*gp(f, STATUS(2)), VIRTIO_BLK_S_IOERR);
	assert_int_equal(*gp(f, STATUS(3)), VIRTIO_BLK_S_IOERR);
	assert_int_equal(*gp(f, STATUS(4)), VIRTIO_BLK_S_UNSUPP);
	assert_int_equal(*gp(f, STATUS(5)), VIRTIO_BLK_S_IOERR);

	/* short header (8 bytes) */
	req(f, 0, VIRTIO_BLK_T_IN, 0, 512, true);
	set_desc(f, 0, HDR(0), 8, VRING_DESC_F_NEXT, 1);
	/* no writable status byte: the status descriptor is device-readable */
	req(f, 1, VIRTIO_BLK_T_FLUSH, 0, 0, false);
	set_desc(f, 5, STATUS(1), 1, 0, 0);
	run(f);
	assert_int_equal(used_idx(f), 8);
	assert_int_equal(*gp(f, STATUS(0)), VIRTIO_BLK_S_IOERR);
	assert_int_equal(*gp(f, STATUS(1)), 0xee); /* untouched */
	assert_int_equal(used_len_at(f, 7), 0);
	virtio_blk_get_stats(f->d, &st);
	assert_true(st.bad_requests >= 6);
	assert_null(virtio_blk_broken(f->d));

	/* a descriptor outside guest RAM breaks the device, never the host */
	req(f, 2, VIRTIO_BLK_T_IN, 0, 512, true);
	set_desc(f, 7, RAM_SIZE - 256, 512, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 8);
	run(f);
	assert_non_null(virtio_blk_broken(f->d));
	assert_true(rd(f->d, VMMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET);
}

static void test_readonly(void **state)
{
	struct fx *f = *state;
	uint8_t back[512], zero[512] = {0};

	wr(f->d, VMMIO_DEV_FEATURES_SEL, 0);
	assert_true(rd(f->d, VMMIO_DEV_FEATURES) & (1u << VIRTIO_BLK_F_RO));
	memset(gp(f, DATA(0)), 0xab, 512);
	req(f, 0, VIRTIO_BLK_T_OUT, 0, 512, false);
	req(f, 1, VIRTIO_BLK_T_FLUSH, 0, 0, false);
	req(f, 2, VIRTIO_BLK_T_IN, 0, 512, true);
	run(f);
	assert_int_equal(*gp(f, STATUS(0)), VIRTIO_BLK_S_IOERR);
	assert_int_equal(*gp(f, STATUS(1)), VIRTIO_BLK_S_OK);
	assert_int_equal(*gp(f, STATUS(2)), VIRTIO_BLK_S_OK);
	assert_int_equal(pread(f->fd, back, 512, 0), 512);
	assert_memory_equal(back, zero, 512);
}

static void test_get_id(void **state)
{
	struct fx *f = *state;
	char want[VIRTIO_BLK_ID_BYTES] = "serial-1";

	memset(gp(f, DATA(0)), 0x55, 64);
	req(f, 0, VIRTIO_BLK_T_GET_ID, 0, VIRTIO_BLK_ID_BYTES, true);
	req(f, 1, VIRTIO_BLK_T_GET_ID, 0, 4, true); /* short buffer: truncated */
	run(f);
	assert_int_equal(*gp(f, STATUS(0)), VIRTIO_BLK_S_OK);
	assert_memory_equal(gp(f, DATA(0)), want, VIRTIO_BLK_ID_BYTES);
	assert_int_equal(*gp(f, STATUS(1)), VIRTIO_BLK_S_OK);
	assert_memory_equal(gp(f, DATA(1)), "seri", 4);
}

static void test_discard_write_zeroes(void **state)
{
	struct fx *f = *state;
	uint8_t buf[8192], zero[8192] = {0};

	memset(buf, 0x77, sizeof(buf));
	assert_int_equal(pwrite(f->fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	put_seg(f, 0, 0, 8, 0);
	req(f, 0, VIRTIO_BLK_T_WRITE_ZEROES, 0, 16, false);
	put_seg(f, 1, 8, 8, 1); /* unmap allowed */
	req(f, 1, VIRTIO_BLK_T_WRITE_ZEROES, 0, 16, false);
	put_seg(f, 2, 0, 8, 0);
	req(f, 2, VIRTIO_BLK_T_DISCARD, 0, 16, false);
	put_seg(f, 3, 0, 8, 1); /* discard with a flag: unsupported */
	req(f, 3, VIRTIO_BLK_T_DISCARD, 0, 16, false);
	put_seg(f, 4, DISK_SECTORS - 4, 8, 0); /* past the end */
	req(f, 4, VIRTIO_BLK_T_WRITE_ZEROES, 0, 16, false);
	req(f, 5, VIRTIO_BLK_T_DISCARD, 0, 20, false); /* not a whole segment */
	run(f);
	assert_int_equal(*gp(f, STATUS(0)), VIRTIO_BLK_S_OK);
	assert_int_equal(*gp(f, STATUS(1)), VIRTIO_BLK_S_OK);
	assert_int_equal(*gp(f, STATUS(2)), VIRTIO_BLK_S_OK);
	assert_int_equal(*gp(f, STATUS(3)), VIRTIO_BLK_S_UNSUPP);
	assert_int_equal(*gp(f, STATUS(4)), VIRTIO_BLK_S_IOERR);
	assert_int_equal(*gp(f, STATUS(5)), VIRTIO_BLK_S_IOERR);
	assert_int_equal(pread(f->fd, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
	assert_memory_equal(buf, zero, sizeof(buf));
}

static void test_many_in_flight(void **state)
{
	struct fx *f = *state;

	for (unsigned i = 0; i < 5; i++) {
		memset(gp(f, DATA(i)), (int)(0x10 + i), 65536);
		req(f, i, VIRTIO_BLK_T_OUT, 128ull * i, 65536, false);
	}
	run(f);
	assert_int_equal(used_idx(f), 5);
	for (unsigned i = 0; i < 5; i++) {
		assert_int_equal(*gp(f, STATUS(i)), VIRTIO_BLK_S_OK);
		memset(gp(f, DATA(i)), 0, 65536);
		req(f, i, VIRTIO_BLK_T_IN, 128ull * i, 65536, true);
	}
	run(f);
	assert_int_equal(used_idx(f), 10);
	for (unsigned i = 0; i < 5; i++) {
		assert_int_equal(*gp(f, STATUS(i)), VIRTIO_BLK_S_OK);
		assert_int_equal(gp(f, DATA(i))[i * 1000], 0x10 + i);
	}
	assert_int_equal(virtio_blk_inflight(f->d), 0);
}

/* A failing host write (/dev/full: ENOSPC) reaches the guest as IOERR; the device keeps working. */
static void test_host_io_error(void **state)
{
	struct fx *f = *state;
	int fd = open("/dev/full", O_RDWR);
	struct virtio_blk *d;

	assert_true(fd >= 0);
	virtio_blk_destroy(f->d);
	f->d = d = make_dev(f, fd, 1 << 20, false, NULL);
	bring_up(d);
	f->avail_idx = 0;
	memset(gp(f, USED), 0, 0x100);
	req(f, 0, VIRTIO_BLK_T_OUT, 0, 4096, false);
	req(f, 1, VIRTIO_BLK_T_IN, 0, 4096, true);
	run(f);
	assert_int_equal(used_idx(f), 2);
	assert_int_equal(*gp(f, STATUS(0)), VIRTIO_BLK_S_IOERR);
	assert_int_equal(*gp(f, STATUS(1)), VIRTIO_BLK_S_OK); /* /dev/full reads zeros */
	assert_null(virtio_blk_broken(d));
}

static void test_state_round_trip(void **state)
{
	struct fx *f = *state;
	size_t n = virtio_blk_state_size(f->d);
	uint8_t *a = malloc(n), *b = malloc(n);
	struct virtio_blk *d2;
	int fd2;

	req(f, 0, VIRTIO_BLK_T_FLUSH, 0, 0, false);
	run(f);
	assert_int_equal(virtio_blk_save(f->d, a, n), (int)n);
	assert_int_equal(virtio_blk_save(f->d, a, n - 1), -ENOSPC);
	fd2 = open(f->path, O_RDWR);
	d2 = make_dev(f, fd2, DISK_SECTORS * 512ull, false, NULL);
	assert_int_equal(virtio_blk_restore(d2, a, n), 0);
	assert_int_equal(virtio_blk_save(d2, b, n), (int)n);
	assert_memory_equal(a, b, n);
	assert_int_equal(rd(d2, VMMIO_STATUS), 0xf);
	wr(d2, VMMIO_QUEUE_SEL, 0);
	assert_int_equal(rd(d2, VMMIO_QUEUE_NUM), QN);
	assert_int_equal(rd(d2, VMMIO_QUEUE_READY), 1);
	virtio_blk_destroy(d2);

	/* another disk (size) or a corrupt record is refused, the device unchanged */
	fd2 = open(f->path, O_RDWR);
	d2 = make_dev(f, fd2, 512 * 1024, false, NULL);
	assert_int_equal(virtio_blk_restore(d2, a, n), -EINVAL);
	assert_int_equal(rd(d2, VMMIO_STATUS), 0);
	memcpy(b, a, n);
	b[n - 2 * VBLK_QUEUE_SIZE - 24] ^= 1; /* the VBLK magic */
	assert_int_equal(virtio_blk_restore(f->d, b, n), -EINVAL);
	assert_int_equal(virtio_blk_restore(f->d, a, n - 1), -EINVAL);
	virtio_blk_destroy(d2);
	free(a);
	free(b);
}

/* While the gate is closed (VM paused) nothing reaches guest RAM; resume delivers. */
static void test_pause_resume(void **state)
{
	struct fx *f = *state;
	struct virtio_blk_stats st;
	uint8_t pat[4096];

	memset(pat, 0x3c, sizeof(pat));
	assert_int_equal(pwrite(f->fd, pat, sizeof(pat), 0), (ssize_t)sizeof(pat));
	f->closed = true;
	memset(gp(f, DATA(1)), 0, 4096);
	memset(gp(f, DATA(0)), 0x11, 4096);
	req(f, 0, VIRTIO_BLK_T_OUT, 64, 4096, false);
	req(f, 1, VIRTIO_BLK_T_IN, 0, 4096, true);
	run(f);
	assert_int_equal(used_idx(f), 0);
	assert_int_equal(*gp(f, STATUS(0)), 0xee);
	assert_int_equal(gp(f, DATA(1))[0], 0);
	assert_int_equal(virtio_blk_inflight(f->d), 2);
	virtio_blk_get_stats(f->d, &st);
	assert_int_equal(st.held, 2);
	virtio_blk_kick(f->d); /* still closed: nothing happens */
	virtio_blk_drain(f->d);
	assert_int_equal(used_idx(f), 0);
	f->closed = false;
	virtio_blk_kick(f->d);
	virtio_blk_drain(f->d);
	assert_int_equal(used_idx(f), 2);
	assert_int_equal(*gp(f, STATUS(0)), VIRTIO_BLK_S_OK);
	assert_int_equal(*gp(f, STATUS(1)), VIRTIO_BLK_S_OK);
	assert_memory_equal(gp(f, DATA(1)), pat, 4096);
	assert_int_equal(virtio_blk_inflight(f->d), 0);
}

/* Requests in flight at save time are re-queued on restore and run on the next kick. */
static void test_inflight_across_restore(void **state)
{
	struct fx *f = *state;
	size_t n = virtio_blk_state_size(f->d);
	uint8_t *a = malloc(n), pat[4096];
	struct virtio_blk *d2;
	int fd2;

	memset(pat, 0x5a, sizeof(pat));
	assert_int_equal(pwrite(f->fd, pat, sizeof(pat), 4096), (ssize_t)sizeof(pat));
	f->closed = true; /* a checkpoint pause */
	memset(gp(f, DATA(0)), 0x22, 4096);
	req(f, 0, VIRTIO_BLK_T_OUT, 16, 4096, false);
	req(f, 1, VIRTIO_BLK_T_IN, 8, 4096, true);
	run(f);
	assert_int_equal(virtio_blk_save(f->d, a, n), (int)n);
	virtio_blk_destroy(f->d); /* the source goes away with both requests unanswered */
	f->d = NULL;
	memset(gp(f, DATA(1)), 0, 4096);
	fd2 = open(f->path, O_RDWR);
	f->closed = false;
	d2 = f->d = make_dev(f, fd2, DISK_SECTORS * 512ull, false, NULL);
	assert_int_equal(virtio_blk_restore(d2, a, n), 0);
	assert_int_equal(virtio_blk_inflight(d2), 2);
	assert_int_equal(used_idx(f), 0);
	virtio_blk_kick(d2);
	virtio_blk_drain(d2);
	assert_int_equal(used_idx(f), 2);
	assert_int_equal(*gp(f, STATUS(0)), VIRTIO_BLK_S_OK);
	assert_int_equal(*gp(f, STATUS(1)), VIRTIO_BLK_S_OK);
	assert_memory_equal(gp(f, DATA(1)), pat, 4096);
	assert_int_equal(pread(f->fd, pat, 4096, 16 * 512), 4096);
	assert_int_equal(pat[100], 0x22);
	/* a new request after the restored ones */
	req(f, 2, VIRTIO_BLK_T_FLUSH, 0, 0, false);
	run(f);
	assert_int_equal(used_idx(f), 3);
	free(a);
}

static void test_reset_drops_inflight(void **state)
{
	struct fx *f = *state;

	f->closed = true;
	req(f, 0, VIRTIO_BLK_T_IN, 0, 4096, true);
	run(f);
	assert_int_equal(virtio_blk_inflight(f->d), 1);
	wr(f->d, VMMIO_STATUS, 0);
	assert_int_equal(virtio_blk_inflight(f->d), 0);
	f->closed = false;
	virtio_blk_kick(f->d);
	virtio_blk_drain(f->d);
	assert_int_equal(used_idx(f), 0);
}

static void test_diskopt(void **state)
{
	struct disk_opts o;
	char err[256];

	(void)state;
	assert_int_equal(disk_opts_parse("path=/tmp/a.img", &o, err, sizeof(err)), 0);
	assert_string_equal(o.path, "/tmp/a.img");
	assert_false(o.readonly);
	assert_string_equal(o.id, "");
	assert_int_equal(disk_opts_parse("id=d0,readonly,path=/dev/vdb", &o, err, sizeof(err)), 0);
	assert_string_equal(o.path, "/dev/vdb");
	assert_true(o.readonly);
	assert_string_equal(o.id, "d0");
	const char *bad[] = {"",
			     "readonly",
			     "path=",
			     "path=a,path=b",
			     "path=a,readonly,readonly",
			     "path=a,id=",
			     "path=a,id=123456789012345678901",
			     "path=a,id=x y",
			     "path=a,size=1G",
			     "path=a,ro=1",
			     "/tmp/a.img"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		assert_int_equal(disk_opts_parse(bad[i], &o, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "--disk"));
		assert_null(strchr(err, '\n'));
	}
}

/* The COLO overlay: writes land in it (the image unchanged), reads see overlay over image per sector,
 * a reset forgets it, a full one holds writes until a reset and a kick, a commit writes it back. */
static void test_overlay(void **state)
{
	struct fx *f = *state;
	uint8_t img[8192], back[8192], zero[8192] = {0};
	uint64_t n = 0;

	memset(img, 0x11, sizeof(img));
	assert_int_equal(pwrite(f->fd, img, sizeof(img), 0), (ssize_t)sizeof(img));
	assert_int_equal(virtio_blk_overlay_start(f->d, 8192), 0);
	memset(gp(f, DATA(0)), 0x22, 4096);
	req(f, 0, VIRTIO_BLK_T_OUT, 8, 4096, false); /* the second 4 KiB */
	req(f, 1, VIRTIO_BLK_T_FLUSH, 0, 0, false);
	run(f);
	assert_int_equal(*gp(f, STATUS(0)), VIRTIO_BLK_S_OK);
	assert_int_equal(*gp(f, STATUS(1)), VIRTIO_BLK_S_OK);
	assert_int_equal(virtio_blk_overlay_bytes(f->d), 4096);
	assert_int_equal(pread(f->fd, back, sizeof(back), 0), (ssize_t)sizeof(back));
	assert_memory_equal(back, img, sizeof(back)); /* the image is untouched */
	req(f, 2, VIRTIO_BLK_T_IN, 4, 8192, true); /* 2 KiB image, 4 KiB overlay, 2 KiB image (zero) */
	run(f);
	assert_int_equal(*gp(f, STATUS(2)), VIRTIO_BLK_S_OK);
	assert_memory_equal(gp(f, DATA(2)), img, 2048);
	memset(back, 0x22, 4096);
	assert_memory_equal(gp(f, DATA(2)) + 2048, back, 4096);
	assert_memory_equal(gp(f, DATA(2)) + 6144, zero, 2048);
	/* full: another 8 KiB does not fit, it is held (not written, not completed) */
	uint16_t before = used_idx(f);
	req(f, 3, VIRTIO_BLK_T_OUT, 32, 8192, false); /* bytes 16 K .. 24 K */
	run(f);
	assert_int_equal(used_idx(f), before);
	struct virtio_blk_stats st;
	virtio_blk_get_stats(f->d, &st);
	assert_int_equal(st.ov_held, 1);
	/* a checkpoint: forget the overlay; the held write then fits and runs on the kick */
	assert_int_equal(virtio_blk_overlay_reset(f->d), 0);
	assert_int_equal(virtio_blk_overlay_bytes(f->d), 0);
	memset(gp(f, DATA(3)), 0x33, 8192);
	virtio_blk_kick(f->d);
	virtio_blk_drain(f->d);
	assert_int_equal(used_idx(f), before + 1);
	assert_int_equal(*gp(f, STATUS(3)), VIRTIO_BLK_S_OK);
	put_seg(f, 4, 8, 4, 0);
	req(f, 4, VIRTIO_BLK_T_WRITE_ZEROES, 0, 16, false); /* a hole in the overlay: zeroes */
	run(f);
	assert_int_equal(*gp(f, STATUS(4)), VIRTIO_BLK_S_OK);
	assert_int_equal(pread(f->fd, back, sizeof(back), 0), (ssize_t)sizeof(back));
	assert_memory_equal(back, img, sizeof(back));
	/* takeover: written back into the image (what the reset forgot is not), the overlay ends */
	assert_int_equal(virtio_blk_overlay_commit(f->d, &n), 0);
	assert_int_equal(n, 8192 + 2048);
	assert_int_equal(pread(f->fd, back, sizeof(back), 0), (ssize_t)sizeof(back));
	assert_memory_equal(back, img, 4096);
	assert_memory_equal(back + 4096, zero, 2048);
	assert_memory_equal(back + 6144, img, 2048);
	assert_int_equal(pread(f->fd, back, sizeof(back), 16384), (ssize_t)sizeof(back));
	memset(img, 0x33, sizeof(img));
	assert_memory_equal(back, img, sizeof(back));
	assert_int_equal(virtio_blk_overlay_bytes(f->d), 0);
}

/* The image lock for shared-storage migration: opened lock-later while another open holds it, taken
 * once that one releases it; no replicated write without it. */
static void test_lock_handover(void **state)
{
	char err[256], path[] = "/tmp/test_vblk_lk.XXXXXX";
	uint8_t ram_[4096] = {0}, sec[512] = {0};
	struct guest_mem gm;
	struct virtio_blk *a, *b;
	uint64_t cap = 0;
	bool locked = true;
	int fd = mkstemp(path), fa, fb;

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	assert_int_equal(mem_init_buffer(&gm, ram_, sizeof(ram_)), 0);
	fa = virtio_blk_open_image(path, false, false, &cap, &locked, err, sizeof(err));
	assert_true(fa >= 0 && locked);
	assert_int_equal(virtio_blk_open_image(path, false, false, &cap, &locked, err, sizeof(err)), -EBUSY);
	fb = virtio_blk_open_image(path, false, true, &cap, &locked, err, sizeof(err));
	assert_true(fb >= 0);
	assert_false(locked);
	assert_int_equal(virtio_blk_create(&gm, fa, cap, false, NULL, 1, &a), 0);
	assert_int_equal(virtio_blk_create(&gm, fb, cap, false, NULL, 1, &b), 0);
	virtio_blk_set_locked(b, false);
	assert_int_equal(virtio_blk_host_apply(b, VIRTIO_BLK_T_OUT, 0, 1, sec), -ENOLCK);
	assert_int_equal(virtio_blk_lock(b, 5), -EBUSY);
	assert_int_equal(virtio_blk_unlock(a), 0);
	assert_false(virtio_blk_locked(a));
	assert_int_equal(virtio_blk_lock(b, 5), 0);
	assert_true(virtio_blk_locked(b));
	assert_int_equal(virtio_blk_host_apply(b, VIRTIO_BLK_T_OUT, 0, 1, sec), 0);
	assert_int_equal(virtio_blk_lock(a, 5), -EBUSY); /* the old holder cannot take it back now */
	virtio_blk_destroy(a);
	virtio_blk_destroy(b);
	mem_destroy(&gm);
	close(fd);
	unlink(path);
}

static void test_open_backend(void **state)
{
	char err[256], path[] = "/tmp/test_vblk_ob.XXXXXX";
	uint64_t cap = 0;
	int fd = mkstemp(path), a, b;

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(virtio_blk_open_backend(path, false, &cap, err, sizeof(err)), -EINVAL); /* empty */
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	a = virtio_blk_open_backend(path, false, &cap, err, sizeof(err));
	assert_true(a >= 0);
	assert_int_equal(cap, 1 << 20);
	b = virtio_blk_open_backend(path, false, &cap, err, sizeof(err)); /* locked by a */
	assert_int_equal(b, -EBUSY);
	assert_non_null(strstr(err, "in use"));
	close(a);
	assert_true(virtio_blk_open_backend("/nonexistent/x.img", false, &cap, err, sizeof(err)) < 0);
	assert_int_equal(virtio_blk_open_backend("/dev/null", false, &cap, err, sizeof(err)), -EINVAL);
	close(fd);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_read_write_flush, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readonly, setup_readonly, teardown),
		cmocka_unit_test_setup_teardown(test_get_id, setup, teardown),
		cmocka_unit_test_setup_teardown(test_discard_write_zeroes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_in_flight, setup, teardown),
		cmocka_unit_test_setup_teardown(test_host_io_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_state_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pause_resume, setup, teardown),
		cmocka_unit_test_setup_teardown(test_inflight_across_restore, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reset_drops_inflight, setup, teardown),
		cmocka_unit_test(test_diskopt),
		cmocka_unit_test(test_open_backend),
		cmocka_unit_test_setup_teardown(test_overlay, setup, teardown),
		cmocka_unit_test(test_lock_handover),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
