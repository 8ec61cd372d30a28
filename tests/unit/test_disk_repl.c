/* test_disk_repl.c — disk replication: the device's write log, sync/log/freeze, DISK_WRITE/DISK_INFO
 * records through the stream, staging, identity checks and apply. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "replication/disk_repl.h"
#include "replication/rw.h"
#include "replication/stream.h"
#include "tests/unit/vblk_fx.h"

/* ---- the write log (Remus disk replication) ---- */

struct refuser {
	int calls, refuse; /* refuse the first `refuse` calls */
	struct virtio_blk_wreq last;
};

static int refuse_cb(void *opaque, const struct virtio_blk_wreq *w)
{
	struct refuser *r = opaque;

	r->last = *w;
	return r->calls++ < r->refuse ? -ENOSPC : 0;
}

/* A write the log refuses is held (not published, data already on the host) and re-run on kick; reads
 * and failed writes never reach the log. */
static void test_wlog_refusal_holds(void **state)
{
	struct fx *f = *state;
	struct virtio_blk_stats st;
	struct refuser r = {.refuse = 1};

	virtio_blk_set_wlog(f->d, refuse_cb, &r);
	memset(gp(f, DATA(0)), 0x77, 4096);
	req(f, 0, VIRTIO_BLK_T_OUT, 16, 4096, false);
	run(f);
	assert_int_equal(used_idx(f), 0);
	assert_int_equal(*gp(f, STATUS(0)), 0xee);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.last.type, VIRTIO_BLK_T_OUT);
	assert_true(r.last.sector == 16 && r.last.nr_sectors == 8 && r.last.niov == 1);
	virtio_blk_get_stats(f->d, &st);
	assert_int_equal(st.wlog_held, 1);
	virtio_blk_kick(f->d); /* the next epoch's resume */
	virtio_blk_drain(f->d);
	assert_int_equal(used_idx(f), 1);
	assert_int_equal(*gp(f, STATUS(0)), VIRTIO_BLK_S_OK);
	assert_int_equal(r.calls, 2);
	req(f, 1, VIRTIO_BLK_T_IN, 16, 4096, true);
	run(f);
	assert_int_equal(used_idx(f), 2);
	assert_int_equal(r.calls, 2); /* reads are not logged */
	put_seg(f, 2, 100, 8, 1);
	req(f, 2, VIRTIO_BLK_T_WRITE_ZEROES, 0, 16, false);
	run(f);
	assert_int_equal(r.calls, 3);
	assert_true(r.last.type == VIRTIO_BLK_T_WRITE_ZEROES && r.last.nr_ranges == 1 &&
		    r.last.range[0].sector == 100 && r.last.range[0].nr_sectors == 8);
	virtio_blk_set_wlog(f->d, NULL, NULL);
}

static int pressures;
static void pressure_cb(void *o)
{
	(void)o;
	pressures++;
}

/* The whole path on one device: sync mode marks blocks, the final pass sends them, log mode captures
 * every completed write with its data, the frozen log goes out as DISK_WRITE records that a reader
 * stages and applies to a second disk, which then equals the first. */
static void test_disk_repl_round_trip(void **state)
{
	struct fx *f = *state;
	struct disk_repl dr;
	struct disk_stage ds = {0};
	struct sr_header h = {.nr_vcpus = 1, .mem_size = RAM_SIZE, .nr_regions = 1};
	struct sr_ctx *w, *rd;
	struct sr_out o;
	struct sr_in in;
	struct sr_record rec;
	uint64_t epoch = 1;
	uint8_t a[8192], b[8192];
	char err[256];
	uint32_t verified = 0;
	struct virtio_blk *d2;
	char p2[] = "/tmp/test_vblk2.XXXXXX";
	int fd2 = mkstemp(p2);

	h.regions[0].size = RAM_SIZE;
	assert_true(fd2 >= 0);
	assert_int_equal(ftruncate(fd2, DISK_SECTORS * 512ull), 0);
	d2 = make_dev(f, fd2, DISK_SECTORS * 512ull, false, "serial-1");
	assert_int_equal(disk_repl_init(&dr, &f->d, 1, pressure_cb, NULL), 0);
	assert_int_equal(disk_repl_start(&dr), 0);
	memset(gp(f, DATA(0)), 0x41, 4096);
	req(f, 0, VIRTIO_BLK_T_OUT, 200, 4096, false); /* sync mode: block 1 (64 KiB) marked */
	run(f);
	assert_null(disk_repl_freeze(&dr)); /* nothing to send per epoch before the log */
	sr_out_mem(&o, 0);
	assert_int_equal(sr_writer_new(&w, &o, false, 1), 0);
	assert_int_equal(sr_write_header(w, &h), 0);
	assert_int_equal(disk_repl_sync(&dr, w, &epoch, err, sizeof(err)), 0); /* no sums: every block */
	assert_int_equal(disk_repl_sync_final(&dr, w, &epoch, err, sizeof(err)), 0);
	struct disk_repl_stats st;
	disk_repl_get_stats(&dr, &st);
	assert_true(st.sync_blocks == 16 && st.sync_done == 16 && st.sync_sent == 16 && st.final_sent == 1);
	assert_int_equal(st.mode, DISK_LOG);
	memset(gp(f, DATA(1)), 0x52, 4096);
	req(f, 1, VIRTIO_BLK_T_OUT, 1000, 4096, false);
	run(f);
	put_seg(f, 2, 1500, 16, 0);
	req(f, 2, VIRTIO_BLK_T_DISCARD, 0, 16, false);
	run(f);
	const struct disk_buf *fb = disk_repl_freeze(&dr);
	assert_non_null(fb);
	assert_int_equal(fb->nops, 2);
	assert_true(fb->ops[0].op == SR_DISK_OP_WRITE && fb->ops[0].sector == 1000 &&
		    fb->ops[0].nr_sectors == 8);
	assert_true(fb->ops[1].op == SR_DISK_OP_DISCARD && fb->ops[1].sector == 1500);
	assert_memory_equal(fb->data, gp(f, DATA(1)), 4096);
	assert_int_equal(disk_buf_write(w, fb), 0);
	assert_int_equal(sr_write_checkpoint_end(w, epoch), 0);
	assert_int_equal(sr_write_end(w), 0);
	assert_int_equal(disk_repl_freeze(&dr)->nops, 0); /* the other buffer, empty */
	disk_repl_free(&dr);
	/* read: stage every epoch, check identity, apply */
	sr_in_mem(&in, o.buf, o.len);
	assert_int_equal(sr_reader_new(&rd, &in), 0);
	assert_int_equal(sr_read_header(rd, &h), 0);
	for (;;) {
		assert_int_equal(sr_read_record(rd, &rec), 0);
		if (rec.type == SR_REC_END)
			break;
		if (rec.type == SR_REC_CHECKPOINT_END) {
			assert_int_equal(
				disk_stage_check(&ds, &d2, 1, &verified, &disk_names_remus, err, sizeof(err)),
				0);
			assert_int_equal(disk_stage_apply(&ds, &d2, 1, err, sizeof(err)), 0);
			disk_stage_reset(&ds);
			continue;
		}
		assert_int_equal(disk_stage_add(&ds, &rec, err, sizeof(err)), 0);
	}
	assert_int_equal(verified, 1);
	for (uint64_t off = 0; off < DISK_SECTORS * 512ull; off += sizeof(a)) {
		assert_int_equal(pread(f->fd, a, sizeof(a), (off_t)off), (ssize_t)sizeof(a));
		assert_int_equal(pread(fd2, b, sizeof(b), (off_t)off), (ssize_t)sizeof(b));
		assert_memory_equal(a, b, sizeof(a));
	}
	/* a disk of another size or id is refused with one line */
	ds.info[0] = (struct disk_info){.seen = true, .size = 512 * 4096, .id = "serial-1"};
	ds.nr_info = 1;
	assert_int_equal(disk_stage_check(&ds, &d2, 1, &verified, &disk_names_remus, err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, "disk0 is 2097152 bytes on the primary, 1048576 here");
	ds.info[0] = (struct disk_info){.seen = true, .size = DISK_SECTORS * 512ull, .id = "other"};
	assert_int_equal(disk_stage_check(&ds, &d2, 1, &verified, &disk_names_remus, err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, "disk0 has id 'other' on the primary, 'serial-1' here");
	assert_int_equal(disk_stage_check(&ds, &d2, 0, &verified, &disk_names_remus, err, sizeof(err)),
			 -EINVAL);
	assert_string_equal(err, "the primary has disk0, this standby not");
	disk_stage_free(&ds);
	sr_ctx_free(rd);
	sr_ctx_free(w);
	sr_out_free(&o);
	virtio_blk_destroy(d2);
	unlink(p2);
}

/* DISK_WRITE / DISK_INFO the reader refuses: bad op, zero sectors, length not matching, padding. */
static void test_disk_records_rejected(void **state)
{
	struct sr_header h = {.nr_vcpus = 1, .mem_size = 1 << 20, .nr_regions = 1};
	uint8_t body[24 + 512];
	struct sr_ctx *w, *rd;
	struct sr_out o;
	struct sr_in in;
	struct sr_record rec;
	static const struct {
		uint32_t disk, op;
		uint64_t sector, n;
		size_t len;
		const char *err;
	} bad[] = {
		{0, 3, 0, 1, 24, "op 3"},
		{0, 0, 0, 0, 24, "sectors 0+0 invalid"},
		{64, 1, 0, 1, 24, "disk 64"},
		{0, 0, 0, 1, 24, "does not match"},
		{0, 1, 0, 1, 24 + 512, "does not match"},
		{0, 1, ~0ull, 2, 24, "invalid"},
	};

	(void)state;
	h.regions[0].size = 1 << 20;
	memset(body, 0, sizeof(body));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memcpy(body, &bad[i].disk, 4);
		memcpy(body + 4, &bad[i].op, 4);
		memcpy(body + 8, &bad[i].sector, 8);
		memcpy(body + 16, &bad[i].n, 8);
		sr_out_mem(&o, 0);
		assert_int_equal(sr_writer_new(&w, &o, false, 1), 0);
		assert_int_equal(sr_write_header(w, &h), 0);
		assert_int_equal(sr_write_record(w, SR_REC_DISK_WRITE, body, bad[i].len), 0);
		sr_in_mem(&in, o.buf, o.len);
		assert_int_equal(sr_reader_new(&rd, &in), 0);
		assert_int_equal(sr_read_header(rd, &h), 0);
		assert_int_equal(sr_read_record(rd, &rec), -EBADMSG);
		assert_non_null(strstr(sr_error(rd), bad[i].err));
		/* the writer refuses the same values */
		if (bad[i].len == 24 && bad[i].op != 0)
			assert_int_equal(
				sr_write_disk_write(w, bad[i].disk, bad[i].op, bad[i].sector, bad[i].n, NULL),
				-EINVAL);
		sr_ctx_free(rd);
		sr_ctx_free(w);
		sr_out_free(&o);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_wlog_refusal_holds, setup, teardown),
		cmocka_unit_test_setup_teardown(test_disk_repl_round_trip, setup, teardown),
		cmocka_unit_test(test_disk_records_rejected),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
