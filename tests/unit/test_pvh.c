/* test_pvh.c — unit tests of the PVH ELF loader over buffer-backed guest RAM. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hv/mem.h"
#include "hv/pvh.h"
#include "tests/unit/need.h"

#define RAM_SIZE (16ull << 20)
#define IMG_PH 64 /* program header table */
#define IMG_NOTE 0x100 /* Xen note */
#define IMG_DATA 0x200 /* PT_LOAD file bytes, up to the end of the image */
#define DATA_LEN 0x300
#define IMG_LEN (IMG_DATA + DATA_LEN)
#define LOAD_GPA 0x100000ull
#define MEMSZ 0x2000ull
#define ENTRY (LOAD_GPA + 0x10)

struct fx {
	struct guest_mem gm;
	uint8_t *ram;
	uint8_t img[IMG_LEN] __attribute__((aligned(8)));
	size_t len;
	char err[256];
};

static uint8_t data_byte(size_t i)
{
	return (uint8_t)(i * 7 + 3);
}

/* Build a minimal PVH ELF: [0] PT_NOTE with the Xen PHYS32 entry note (desc 4 or 8 bytes),
 * [1] PT_LOAD of DATA_LEN bytes at LOAD_GPA with MEMSZ bytes of memory. cls is 64 or 32. */
static size_t build(uint8_t *b, int cls, int desc)
{
	uint32_t note_len = 12 + 4 + (uint32_t)desc;
	uint8_t *n = b + IMG_NOTE;

	memset(b, 0, IMG_LEN);
	if (cls == 64) {
		Elf64_Ehdr *eh = (Elf64_Ehdr *)b;
		Elf64_Phdr *ph = (Elf64_Phdr *)(b + IMG_PH);

		memcpy(eh->e_ident, ELFMAG, SELFMAG);
		eh->e_ident[EI_CLASS] = ELFCLASS64;
		eh->e_ident[EI_DATA] = ELFDATA2LSB;
		eh->e_ident[EI_VERSION] = EV_CURRENT;
		eh->e_type = ET_EXEC;
		eh->e_machine = EM_X86_64;
		eh->e_version = EV_CURRENT;
		eh->e_entry = 0xffffffff81000000ull;
		eh->e_phoff = IMG_PH;
		eh->e_ehsize = sizeof(*eh);
		eh->e_phentsize = sizeof(*ph);
		eh->e_phnum = 2;
		ph[0] = (Elf64_Phdr){.p_type = PT_NOTE,
				     .p_offset = IMG_NOTE,
				     .p_filesz = note_len,
				     .p_memsz = note_len,
				     .p_align = 4};
		ph[1] = (Elf64_Phdr){.p_type = PT_LOAD,
				     .p_offset = IMG_DATA,
				     .p_paddr = LOAD_GPA,
				     .p_vaddr = 0xffffffff81000000ull,
				     .p_filesz = DATA_LEN,
				     .p_memsz = MEMSZ,
				     .p_align = 0x1000};
	} else {
		Elf32_Ehdr *eh = (Elf32_Ehdr *)b;
		Elf32_Phdr *ph = (Elf32_Phdr *)(b + IMG_PH);

		memcpy(eh->e_ident, ELFMAG, SELFMAG);
		eh->e_ident[EI_CLASS] = ELFCLASS32;
		eh->e_ident[EI_DATA] = ELFDATA2LSB;
		eh->e_ident[EI_VERSION] = EV_CURRENT;
		eh->e_type = ET_EXEC;
		eh->e_machine = EM_386;
		eh->e_version = EV_CURRENT;
		eh->e_phoff = IMG_PH;
		eh->e_ehsize = sizeof(*eh);
		eh->e_phentsize = sizeof(*ph);
		eh->e_phnum = 2;
		ph[0] = (Elf32_Phdr){.p_type = PT_NOTE,
				     .p_offset = IMG_NOTE,
				     .p_filesz = note_len,
				     .p_memsz = note_len,
				     .p_align = 4};
		ph[1] = (Elf32_Phdr){.p_type = PT_LOAD,
				     .p_offset = IMG_DATA,
				     .p_paddr = LOAD_GPA,
				     .p_vaddr = LOAD_GPA,
				     .p_filesz = DATA_LEN,
				     .p_memsz = MEMSZ,
				     .p_align = 0x1000};
	}
	memcpy(n, &(uint32_t){4}, 4);
	memcpy(n + 4, &(uint32_t){(uint32_t)desc}, 4);
	memcpy(n + 8, &(uint32_t){XEN_ELFNOTE_PHYS32_ENTRY}, 4);
	memcpy(n + 12, "Xen", 4);
	if (desc == 8)
		memcpy(n + 16, &(uint64_t){ENTRY}, 8);
	else
		memcpy(n + 16, &(uint32_t){(uint32_t)ENTRY}, 4);
	for (size_t i = 0; i < DATA_LEN; i++)
		b[IMG_DATA + i] = data_byte(i);
	return IMG_LEN;
}

static Elf64_Ehdr *eh64(struct fx *f)
{
	return (Elf64_Ehdr *)f->img;
}

static Elf64_Phdr *ph64(struct fx *f, int i)
{
	return (Elf64_Phdr *)(f->img + IMG_PH) + i;
}

static uint32_t *note_word(struct fx *f, int i)
{
	return (uint32_t *)(f->img + IMG_NOTE) + i;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	f->ram = calloc(1, RAM_SIZE);
	if (!f->ram || mem_init_buffer(&f->gm, f->ram, RAM_SIZE)) {
		free(f->ram);
		free(f);
		return -1;
	}
	f->len = build(f->img, 64, 4);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	mem_destroy(&f->gm);
	free(f->ram);
	free(f);
	return 0;
}

static int load(struct fx *f, const char *cmdline, struct pvh_image *img)
{
	struct pvh_image tmp;

	f->err[0] = 0;
	return pvh_load(&f->gm, f->img, f->len, cmdline, img ? img : &tmp, f->err, sizeof(f->err));
}

static bool ram_untouched(struct fx *f)
{
	/* The boot area and the segment's neighbourhood: everything the loader could write. */
	for (uint64_t i = 0; i < PVH_BOOT_AREA_END; i++)
		if (f->ram[i])
			return false;
	for (uint64_t i = LOAD_GPA; i < LOAD_GPA + MEMSZ + 0x1000; i++)
		if (f->ram[i])
			return false;
	for (uint64_t w = 0; w < (f->gm.nr_pages + 63) / 64; w++)
		if (f->gm.dev_dirty[w])
			return false;
	return true;
}

/* Zero RAM and the device-dirty bitmap after a successful load. */
static void reset_ram(struct fx *f)
{
	memset(f->ram, 0, RAM_SIZE);
	memset(f->gm.dev_dirty, 0, (f->gm.nr_pages + 63) / 64 * sizeof(uint64_t));
}

/* Expect a load failure with rc and a message containing `what`; RAM must be untouched. */
static void expect_fail(struct fx *f, int rc, const char *what)
{
	int r = load(f, "console=ttyS0", NULL);

	if (r != rc || !strstr(f->err, what))
		print_error("got rc %d err \"%s\", want rc %d containing \"%s\"\n", r, f->err, rc, what);
	assert_int_equal(r, rc);
	assert_non_null(strstr(f->err, what));
	assert_null(strchr(f->err, '\n'));
	assert_true(ram_untouched(f));
}

static void check_loaded(struct fx *f, const struct pvh_image *img, const char *cmdline)
{
	const struct hvm_start_info *si = (const void *)(f->ram + PVH_START_INFO_GPA);
	const struct hvm_memmap_table_entry *mm = (const void *)(f->ram + PVH_MEMMAP_GPA);
	uint64_t bits[(RAM_SIZE >> 12) / 64] = {0};

	assert_int_equal(img->entry, ENTRY);
	assert_int_equal(img->start_info, PVH_START_INFO_GPA);
	assert_int_equal(img->kernel_end, LOAD_GPA + MEMSZ);
	for (size_t i = 0; i < DATA_LEN; i++)
		assert_int_equal(f->ram[LOAD_GPA + i], data_byte(i));
	for (size_t i = DATA_LEN; i < MEMSZ; i++)
		assert_int_equal(f->ram[LOAD_GPA + i], 0);
	assert_int_equal(f->ram[LOAD_GPA + MEMSZ], 0xaa); /* not written past memsz */

	assert_int_equal(si->magic, XEN_HVM_START_MAGIC_VALUE);
	assert_int_equal(si->version, 1);
	assert_int_equal(si->flags, 0);
	assert_int_equal(si->nr_modules, 0);
	assert_int_equal(si->modlist_paddr, 0);
	assert_int_equal(si->rsdp_paddr, 0);
	assert_int_equal(si->reserved, 0);
	assert_int_equal(si->cmdline_paddr, PVH_CMDLINE_GPA);
	assert_string_equal((const char *)f->ram + si->cmdline_paddr, cmdline);
	assert_int_equal(si->memmap_paddr, PVH_MEMMAP_GPA);
	assert_int_equal(si->memmap_entries, 2);
	assert_int_equal(mm[0].addr, 0x1000);
	assert_int_equal(mm[0].size, RAM_SIZE - 0x1000);
	assert_int_equal(mm[0].type, XEN_HVM_MEMMAP_TYPE_RAM);
	assert_int_equal(mm[1].addr, MEM_LOW_LIMIT);
	assert_int_equal(mm[1].size, MEM_HIGH_BASE - MEM_LOW_LIMIT);
	assert_int_equal(mm[1].type, XEN_HVM_MEMMAP_TYPE_RESERVED);

	/* Exactly the segment pages and the boot-area pages are device-dirty. */
	mem_dev_dirty_take(&f->gm, bits);
	for (uint64_t pg = 0; pg < RAM_SIZE >> 12; pg++) {
		bool want = (pg >= LOAD_GPA >> 12 && pg < (LOAD_GPA + MEMSZ) >> 12) ||
			    pg == PVH_START_INFO_GPA >> 12 || pg == PVH_CMDLINE_GPA >> 12;
		assert_int_equal(!!(bits[pg / 64] & (1ull << (pg % 64))), want);
	}
}

static void test_good64(void **state)
{
	struct fx *f = *state;
	struct pvh_image img;

	memset(f->ram + LOAD_GPA, 0xaa, MEMSZ + 0x1000);
	assert_int_equal(load(f, "console=ttyS0 quiet", &img), 0);
	check_loaded(f, &img, "console=ttyS0 quiet");
}

static void test_good64_desc8(void **state)
{
	struct fx *f = *state;
	struct pvh_image img;

	f->len = build(f->img, 64, 8);
	memset(f->ram + LOAD_GPA, 0xaa, MEMSZ + 0x1000);
	assert_int_equal(load(f, NULL, &img), 0);
	check_loaded(f, &img, "");
}

static void test_good32(void **state)
{
	struct fx *f = *state;
	struct pvh_image img;

	f->len = build(f->img, 32, 4);
	memset(f->ram + LOAD_GPA, 0xaa, MEMSZ + 0x1000);
	assert_int_equal(load(f, "x", &img), 0);
	check_loaded(f, &img, "x");
}

static void test_truncated_every_length(void **state)
{
	struct fx *f = *state;
	struct pvh_image img;

	for (int cls = 32; cls <= 64; cls += 32) {
		size_t full = build(f->img, cls, cls == 64 ? 8 : 4);

		reset_ram(f);

		for (size_t len = 0; len <= full; len++) {
			uint8_t *copy = malloc(len ? len : 1); /* exact size: ASan catches overreads */
			int rc;

			assert_non_null(copy);
			memcpy(copy, f->img, len);
			f->err[0] = 0;
			rc = pvh_load(&f->gm, copy, len, "", &img, f->err, sizeof(f->err));
			free(copy);
			if (len < full) {
				assert_true(rc < 0);
				assert_true(f->err[0] != 0);
				assert_true(ram_untouched(f));
			} else {
				assert_int_equal(rc, 0);
			}
		}
	}
	assert_int_equal(pvh_load(&f->gm, NULL, 100, "", &img, f->err, sizeof(f->err)), -ENOEXEC);
}

static void test_not_elf(void **state)
{
	struct fx *f = *state;

	memcpy(f->img, "#!/bin/sh\n", 10);
	expect_fail(f, -ENOEXEC, "not an ELF file");
}

static void test_bad_ident(void **state)
{
	struct fx *f = *state;

	eh64(f)->e_ident[EI_CLASS] = 3;
	expect_fail(f, -ENOEXEC, "unsupported ELF class 3");
	f->len = build(f->img, 64, 4);
	eh64(f)->e_ident[EI_DATA] = ELFDATA2MSB;
	expect_fail(f, -ENOEXEC, "little-endian");
	f->len = build(f->img, 64, 4);
	eh64(f)->e_ident[EI_VERSION] = 7;
	expect_fail(f, -ENOEXEC, "ELF version 7");
	f->len = build(f->img, 64, 4);
	eh64(f)->e_type = ET_DYN;
	expect_fail(f, -ENOEXEC, "not an executable");
}

static void test_bad_machine(void **state)
{
	struct fx *f = *state;

	eh64(f)->e_machine = EM_AARCH64;
	expect_fail(f, -ENOEXEC, "unsupported ELF machine 183");
	eh64(f)->e_machine = EM_386; /* 64-bit class with the 32-bit machine */
	expect_fail(f, -ENOEXEC, "unsupported ELF machine 3");
	f->len = build(f->img, 32, 4);
	((Elf32_Ehdr *)f->img)->e_machine = EM_X86_64;
	expect_fail(f, -ENOEXEC, "unsupported ELF machine 62");
}

static void test_phdr_table(void **state)
{
	struct fx *f = *state;

	eh64(f)->e_phoff = f->len;
	expect_fail(f, -ENOEXEC, "program headers beyond end of file");
	eh64(f)->e_phoff = UINT64_MAX - 8; /* phoff + size overflows */
	expect_fail(f, -ENOEXEC, "program headers beyond end of file");
	eh64(f)->e_phoff = f->len - 100; /* table starts inside, ends outside */
	expect_fail(f, -ENOEXEC, "program headers beyond end of file");
	eh64(f)->e_phoff = IMG_PH;
	eh64(f)->e_phnum = 0xffff;
	expect_fail(f, -ENOEXEC, "too many program headers");
	eh64(f)->e_phnum = PVH_MAX_PHDRS + 1;
	expect_fail(f, -ENOEXEC, "too many program headers");
	eh64(f)->e_phnum = 30; /* sane count but past the end of this file */
	expect_fail(f, -ENOEXEC, "program headers beyond end of file");
	eh64(f)->e_phnum = 0;
	expect_fail(f, -ENOEXEC, "no program headers");
	eh64(f)->e_phnum = 2;
	eh64(f)->e_phentsize = 32;
	expect_fail(f, -ENOEXEC, "bad program header size 32");
}

static void test_segment_file_bounds(void **state)
{
	struct fx *f = *state;

	ph64(f, 1)->p_offset = f->len - 10;
	expect_fail(f, -ENOEXEC, "segment 1 data beyond end of file");
	ph64(f, 1)->p_offset = UINT64_MAX - 0x100; /* offset + filesz overflows */
	expect_fail(f, -ENOEXEC, "segment 1 data beyond end of file");
	ph64(f, 1)->p_offset = IMG_DATA;
	ph64(f, 1)->p_filesz = MEMSZ + 1;
	expect_fail(f, -ENOEXEC, "file size 0x2001 > memory size 0x2000");
	ph64(f, 1)->p_filesz = UINT64_MAX;
	ph64(f, 1)->p_memsz = UINT64_MAX;
	expect_fail(f, -ENOEXEC, "beyond end of file");
}

static void test_segment_ram_bounds(void **state)
{
	struct fx *f = *state;

	ph64(f, 1)->p_paddr = RAM_SIZE - 0x1000; /* crosses the end of RAM */
	expect_fail(f, -ERANGE, "segment 0xfff000-0x1001000 outside guest memory (RAM is 0x0-0x1000000)");
	ph64(f, 1)->p_paddr = 0x40000000;
	expect_fail(f, -ERANGE, "outside guest memory");
	ph64(f, 1)->p_paddr = UINT64_MAX - 0x100; /* paddr + memsz overflows */
	expect_fail(f, -ERANGE, "overflows");
	ph64(f, 1)->p_paddr = LOAD_GPA;
	ph64(f, 1)->p_memsz = UINT64_MAX - 0x1000;
	expect_fail(f, -ERANGE, "overflows");
	ph64(f, 1)->p_memsz = RAM_SIZE;
	expect_fail(f, -ERANGE, "outside guest memory");
}

static void test_segment_boot_area(void **state)
{
	struct fx *f = *state;

	ph64(f, 1)->p_paddr = 0x7000;
	expect_fail(f, -ERANGE, "overlaps the boot area");
	ph64(f, 1)->p_paddr = 0;
	expect_fail(f, -ERANGE, "overlaps the boot area");
	ph64(f, 1)->p_paddr = PVH_BOOT_AREA_END - 1;
	expect_fail(f, -ERANGE, "overlaps the boot area");
}

static void test_no_loads(void **state)
{
	struct fx *f = *state;

	ph64(f, 1)->p_type = PT_NULL;
	expect_fail(f, -ENOEXEC, "no loadable segments");
}

static void test_note_missing(void **state)
{
	struct fx *f = *state;

	ph64(f, 0)->p_type = PT_NULL;
	expect_fail(f, -ENOEXEC, "no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)");
	ph64(f, 0)->p_type = PT_NOTE;
	memcpy(f->img + IMG_NOTE + 12, "Xem", 4); /* wrong name */
	expect_fail(f, -ENOEXEC, "no PVH entry note");
	memcpy(f->img + IMG_NOTE + 12, "Xen", 4);
	*note_word(f, 2) = 17; /* other Xen note type */
	expect_fail(f, -ENOEXEC, "no PVH entry note");
	*note_word(f, 2) = XEN_ELFNOTE_PHYS32_ENTRY;
	*note_word(f, 0) = 3; /* "Xen" without the NUL */
	expect_fail(f, -ENOEXEC, "no PVH entry note");
}

static void test_note_malformed(void **state)
{
	struct fx *f = *state;

	*note_word(f, 1) = 64; /* descriptor runs past the note segment */
	expect_fail(f, -ENOEXEC, "truncated ELF note");
	*note_word(f, 1) = 0xffffffff;
	expect_fail(f, -ENOEXEC, "truncated ELF note");
	*note_word(f, 1) = 4;
	*note_word(f, 0) = 0xfffffffd; /* name size overflow when padded */
	expect_fail(f, -ENOEXEC, "truncated ELF note");
	*note_word(f, 0) = 4;
	*note_word(f, 1) = 2;
	expect_fail(f, -ENOEXEC, "2-byte descriptor");
	*note_word(f, 1) = 4;
	ph64(f, 0)->p_filesz = 0x1000; /* note segment beyond the file */
	expect_fail(f, -ENOEXEC, "note segment 0 beyond end of file");
	ph64(f, 0)->p_filesz = 11; /* shorter than a note header: no note at all */
	expect_fail(f, -ENOEXEC, "no PVH entry note");
}

static void test_note_entry_range(void **state)
{
	struct fx *f = *state;

	*note_word(f, 4) = (uint32_t)(LOAD_GPA + DATA_LEN + 0x10); /* in the bss, not in file bytes */
	expect_fail(f, -ENOEXEC, "PVH entry 0x100310 is not inside a loaded segment");
	*note_word(f, 4) = 0x200000;
	expect_fail(f, -ENOEXEC, "not inside a loaded segment");
	f->len = build(f->img, 64, 8);
	memcpy(f->img + IMG_NOTE + 16, &(uint64_t){0x100100000ull}, 8);
	expect_fail(f, -ENOEXEC, "above 4 GiB");
}

static void test_two_notes(void **state)
{
	struct fx *f = *state;

	/* A second PT_NOTE (replacing nothing): phnum 3 with phdr[2] = copy of phdr[0]. */
	*ph64(f, 2) = *ph64(f, 0);
	eh64(f)->e_phnum = 3;
	expect_fail(f, -ENOEXEC, "more than one PVH entry note");
}

static void test_note_align8(void **state)
{
	struct fx *f = *state;
	struct pvh_image img;

	/* A GNU property-style 8-aligned note first, then the Xen note at offset 8-aligned. */
	uint8_t *n = f->img + IMG_NOTE;
	uint8_t xen[24];

	memcpy(xen, n, 24);
	memset(n, 0, 0x100);
	memcpy(n, &(uint32_t){4}, 4);
	memcpy(n + 4, &(uint32_t){12}, 4);
	memcpy(n + 8, &(uint32_t){5}, 4);
	memcpy(n + 12, "GNU", 4);
	/* desc 12 bytes at n+16, padded to 16 with align 8 -> next note at n+32 */
	memcpy(n + 32, xen, 24);
	ph64(f, 0)->p_filesz = 56;
	ph64(f, 0)->p_align = 8;
	assert_int_equal(load(f, "", &img), 0);
	assert_int_equal(img.entry, ENTRY);
}

static void test_cmdline(void **state)
{
	struct fx *f = *state;
	char *s = malloc(PVH_CMDLINE_MAX + 1);
	struct pvh_image img;

	assert_non_null(s);
	memset(s, 'a', PVH_CMDLINE_MAX);
	s[PVH_CMDLINE_MAX] = 0;
	assert_int_equal(load(f, s, &img), -E2BIG);
	assert_non_null(strstr(f->err, "command line too long"));
	assert_true(ram_untouched(f));
	s[PVH_CMDLINE_MAX - 1] = 0; /* 4095 characters fit */
	assert_int_equal(load(f, s, &img), 0);
	assert_int_equal(strlen((char *)f->ram + PVH_CMDLINE_GPA), PVH_CMDLINE_MAX - 1);
	free(s);
}

static void test_small_ram(void **state)
{
	struct guest_mem gm;
	uint8_t *buf = calloc(1, 0x4000);
	struct pvh_image img;
	char err[128];

	(void)state;
	assert_non_null(buf);
	assert_int_equal(mem_init_buffer(&gm, buf, 0x4000), 0);
	assert_int_equal(pvh_load(&gm, "x", 1, "", &img, err, sizeof(err)), -ERANGE);
	assert_non_null(strstr(err, "too small"));
	mem_destroy(&gm);
	free(buf);
}

static void test_high_ram_memmap(void **state)
{
	struct guest_mem gm;
	struct fx *f = *state;
	struct pvh_image img;
	const uint64_t size = MEM_LOW_LIMIT + (8ull << 20);
	const struct hvm_memmap_table_entry *mm;
	const struct hvm_start_info *si;

	assert_int_equal(mem_create(&gm, size), 0); /* a set-up failure of the code under test fails */
	assert_int_equal(pvh_load(&gm, f->img, f->len, "hi", &img, f->err, sizeof(f->err)), 0);
	si = gpa_ptr(&gm, PVH_START_INFO_GPA, sizeof(*si));
	mm = gpa_ptr(&gm, PVH_MEMMAP_GPA, 3 * sizeof(*mm));
	assert_int_equal(si->memmap_entries, 3);
	assert_int_equal(mm[0].addr, 0x1000);
	assert_int_equal(mm[0].size, MEM_LOW_LIMIT - 0x1000);
	assert_int_equal(mm[1].addr, MEM_LOW_LIMIT);
	assert_int_equal(mm[1].type, XEN_HVM_MEMMAP_TYPE_RESERVED);
	assert_int_equal(mm[2].addr, MEM_HIGH_BASE);
	assert_int_equal(mm[2].size, 8ull << 20);
	assert_int_equal(mm[2].type, XEN_HVM_MEMMAP_TYPE_RAM);

	/* A segment spanning the low/high split is refused; one in high RAM loads. */
	ph64(f, 1)->p_paddr = MEM_LOW_LIMIT - 0x1000;
	assert_int_equal(pvh_load(&gm, f->img, f->len, "", &img, f->err, sizeof(f->err)), -ERANGE);
	assert_non_null(strstr(f->err, "(RAM is 0x0-0xc0000000 and 0x100000000-0x100800000)"));
	/* High RAM is fine for a segment, but then the 32-bit entry is outside every segment. */
	ph64(f, 1)->p_paddr = MEM_HIGH_BASE;
	assert_int_equal(pvh_load(&gm, f->img, f->len, "", &img, f->err, sizeof(f->err)), -ENOEXEC);
	assert_non_null(strstr(f->err, "not inside a loaded segment"));
	mem_destroy(&gm);
}

static const char *tmpdir(void)
{
	const char *t = getenv("TMPDIR");

	return t && *t ? t : "/tmp";
}

static int load_path(struct fx *f, const char *path)
{
	struct pvh_image img;

	f->err[0] = 0;
	return pvh_load_file(&f->gm, path, "", &img, f->err, sizeof(f->err));
}

static void test_load_file(void **state)
{
	struct fx *f = *state;
	char path[256], want[320];
	int fd;

	assert_int_equal(load_path(f, "/nonexistent/kernel.elf"), -ENOENT);
	assert_string_equal(f->err, "cannot open kernel /nonexistent/kernel.elf: No such file or directory");
	assert_int_equal(load_path(f, tmpdir()), -EISDIR);
	assert_non_null(strstr(f->err, "is a directory"));
	assert_int_equal(load_path(f, "/dev/null"), -EINVAL);
	assert_non_null(strstr(f->err, "not a regular file"));
	assert_int_equal(load_path(f, ""), -EINVAL);

	snprintf(path, sizeof(path), "%s/test_pvh.XXXXXX", tmpdir());
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(load_path(f, path), -EINVAL);
	assert_non_null(strstr(f->err, "empty file"));

	assert_int_equal(write(fd, "hello world\n", 12), 12);
	assert_int_equal(load_path(f, path), -ENOEXEC);
	snprintf(want, sizeof(want), "kernel %s: not an ELF file", path);
	assert_string_equal(f->err, want);

	assert_int_equal(ftruncate(fd, (off_t)PVH_MAX_FILE + 1), 0); /* sparse: cheap */
	assert_int_equal(load_path(f, path), -EFBIG);
	assert_non_null(strstr(f->err, "too large"));

	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(pwrite(fd, f->img, f->len, 0), (ssize_t)f->len);
	assert_int_equal(load_path(f, path), 0);
	assert_int_equal(f->ram[LOAD_GPA], data_byte(0));

	ph64(f, 0)->p_type = PT_NULL;
	assert_int_equal(pwrite(fd, f->img, f->len, 0), (ssize_t)f->len);
	assert_int_equal(load_path(f, path), -ENOEXEC);
	snprintf(want, sizeof(want), "kernel %s: no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)", path);
	assert_string_equal(f->err, want);
	close(fd);
	unlink(path);
}

static void test_guest_elf(void **state)
{
	struct guest_mem gm;
	struct pvh_image img;
	char err[256];
	char path[512];
	uint8_t *ram;
	int rc;

	(void)state;
	need_guest_elf(path, sizeof(path));
	ram = calloc(1, 64ull << 20);
	assert_non_null(ram);
	assert_int_equal(mem_init_buffer(&gm, ram, 64ull << 20), 0);
	rc = pvh_load_file(&gm, path, "console=ttyS0", &img, err, sizeof(err));
	if (rc)
		print_error("%s\n", err);
	assert_int_equal(rc, 0);
	assert_true(img.entry >= PVH_BOOT_AREA_END);
	assert_true(img.kernel_end > img.entry);
	mem_destroy(&gm);
	free(ram);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_good64),
		T(test_good64_desc8),
		T(test_good32),
		T(test_truncated_every_length),
		T(test_not_elf),
		T(test_bad_ident),
		T(test_bad_machine),
		T(test_phdr_table),
		T(test_segment_file_bounds),
		T(test_segment_ram_bounds),
		T(test_segment_boot_area),
		T(test_no_loads),
		T(test_note_missing),
		T(test_note_malformed),
		T(test_note_entry_range),
		T(test_two_notes),
		T(test_note_align8),
		T(test_cmdline),
		cmocka_unit_test(test_small_ram),
		T(test_high_ram_memmap),
		T(test_load_file),
		cmocka_unit_test(test_guest_elf),
	};
#undef T
	return cmocka_run_group_tests_name("pvh", tests, NULL, NULL);
}
