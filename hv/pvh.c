/* pvh.c — PVH ELF loader: validate an x86 ELF, load its PT_LOAD segments, build hvm_start_info. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/errf.h"
#include "hv/pvh.h"

_Static_assert(sizeof(struct hvm_start_info) == 56, "hvm_start_info layout");
_Static_assert(sizeof(struct hvm_memmap_table_entry) == 24, "hvm_memmap_table_entry layout");
_Static_assert(PVH_START_INFO_GPA + sizeof(struct hvm_start_info) <= PVH_MEMMAP_GPA, "layout");
_Static_assert(PVH_MEMMAP_GPA + PVH_MEMMAP_MAX * sizeof(struct hvm_memmap_table_entry) <= PVH_CMDLINE_GPA,
	       "layout");
_Static_assert(PVH_CMDLINE_GPA + PVH_CMDLINE_MAX <= PVH_BOOT_AREA_END, "layout");

/* A program header, class-independent. */
struct seg {
	uint32_t type;
	uint64_t off, filesz, paddr, memsz, align;
};

struct elf_img {
	const uint8_t *p;
	size_t len;
	uint16_t type; /* e_type, checked after the note so a non-PVH binary says so */
	int nseg;
	struct seg seg[PVH_MAX_PHDRS];
};

/* [off, off+n) inside the file? Overflow-safe. */
static bool in_file(const struct elf_img *e, uint64_t off, uint64_t n)
{
	return off <= e->len && n <= e->len - off;
}

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
	return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

/* Validate the ELF header and read the program header table into e->seg. */
static int parse_headers(struct elf_img *e, char *err, size_t errlen)
{
	const uint8_t *p = e->p;
	uint64_t phoff;
	uint16_t type, machine, phentsize, phnum;
	bool is64;
	size_t ehsize, phsize;

	if (e->len < SELFMAG || memcmp(p, ELFMAG, SELFMAG))
		return errf(err, errlen, -ENOEXEC, "not an ELF file");
	if (e->len < EI_NIDENT)
		return errf(err, errlen, -ENOEXEC, "truncated ELF (identification)");
	if (p[EI_CLASS] != ELFCLASS64 && p[EI_CLASS] != ELFCLASS32)
		return errf(err, errlen, -ENOEXEC, "unsupported ELF class %u", p[EI_CLASS]);
	if (p[EI_DATA] != ELFDATA2LSB)
		return errf(err, errlen, -ENOEXEC, "not a little-endian ELF file (EI_DATA %u)", p[EI_DATA]);
	if (p[EI_VERSION] != EV_CURRENT)
		return errf(err, errlen, -ENOEXEC, "unsupported ELF version %u", p[EI_VERSION]);
	is64 = p[EI_CLASS] == ELFCLASS64;
	ehsize = is64 ? sizeof(Elf64_Ehdr) : sizeof(Elf32_Ehdr);
	phsize = is64 ? sizeof(Elf64_Phdr) : sizeof(Elf32_Phdr);
	if (e->len < ehsize)
		return errf(err, errlen, -ENOEXEC, "truncated ELF (header)");

	type = rd16(p + offsetof(Elf64_Ehdr, e_type)); /* same offset in both classes */
	machine = rd16(p + offsetof(Elf64_Ehdr, e_machine));
	if (is64) {
		phoff = rd64(p + offsetof(Elf64_Ehdr, e_phoff));
		phentsize = rd16(p + offsetof(Elf64_Ehdr, e_phentsize));
		phnum = rd16(p + offsetof(Elf64_Ehdr, e_phnum));
	} else {
		phoff = rd32(p + offsetof(Elf32_Ehdr, e_phoff));
		phentsize = rd16(p + offsetof(Elf32_Ehdr, e_phentsize));
		phnum = rd16(p + offsetof(Elf32_Ehdr, e_phnum));
	}
	if (machine != (is64 ? EM_X86_64 : EM_386))
		return errf(err, errlen, -ENOEXEC, "unsupported ELF machine %u (want %s)", machine,
			    is64 ? "x86-64 (62)" : "i386 (3)");
	if (phnum == 0)
		return errf(err, errlen, -ENOEXEC, "ELF file has no program headers");
	if (phnum > PVH_MAX_PHDRS)
		return errf(err, errlen, -ENOEXEC, "too many program headers (%u, max %d)", phnum,
			    PVH_MAX_PHDRS);
	if (phentsize < phsize)
		return errf(err, errlen, -ENOEXEC, "bad program header size %u (want %zu)", phentsize,
			    phsize);
	if (!in_file(e, phoff, (uint64_t)phnum * phentsize))
		return errf(err, errlen, -ENOEXEC, "truncated ELF (program headers beyond end of file)");

	e->type = type;
	e->nseg = phnum;
	for (int i = 0; i < phnum; i++) {
		const uint8_t *h = p + phoff + (uint64_t)i * phentsize;
		struct seg *s = &e->seg[i];

		if (is64) {
			s->type = rd32(h + offsetof(Elf64_Phdr, p_type));
			s->off = rd64(h + offsetof(Elf64_Phdr, p_offset));
			s->paddr = rd64(h + offsetof(Elf64_Phdr, p_paddr));
			s->filesz = rd64(h + offsetof(Elf64_Phdr, p_filesz));
			s->memsz = rd64(h + offsetof(Elf64_Phdr, p_memsz));
			s->align = rd64(h + offsetof(Elf64_Phdr, p_align));
		} else {
			s->type = rd32(h + offsetof(Elf32_Phdr, p_type));
			s->off = rd32(h + offsetof(Elf32_Phdr, p_offset));
			s->paddr = rd32(h + offsetof(Elf32_Phdr, p_paddr));
			s->filesz = rd32(h + offsetof(Elf32_Phdr, p_filesz));
			s->memsz = rd32(h + offsetof(Elf32_Phdr, p_memsz));
			s->align = rd32(h + offsetof(Elf32_Phdr, p_align));
		}
	}
	return 0;
}

static int ram_desc(const struct guest_mem *gm, char *buf, size_t len)
{
	if (gm->nr <= 0)
		return snprintf(buf, len, "none");
	if (gm->nr == 1)
		return snprintf(buf, len, "0x%" PRIx64 "-0x%" PRIx64, gm->r[0].gpa,
				gm->r[0].gpa + gm->r[0].size);
	return snprintf(buf, len, "0x%" PRIx64 "-0x%" PRIx64 " and 0x%" PRIx64 "-0x%" PRIx64, gm->r[0].gpa,
			gm->r[0].gpa + gm->r[0].size, gm->r[1].gpa, gm->r[1].gpa + gm->r[1].size);
}

/* Check every PT_LOAD: inside the file, filesz <= memsz, inside one RAM region, off the boot area. */
static int check_loads(const struct elf_img *e, const struct guest_mem *gm, uint64_t *end, char *err,
		       size_t errlen)
{
	char ram[96];
	int nload = 0;

	*end = 0;
	for (int i = 0; i < e->nseg; i++) {
		const struct seg *s = &e->seg[i];

		if (s->type != PT_LOAD)
			continue;
		if (s->filesz > s->memsz)
			return errf(err, errlen, -ENOEXEC,
				    "segment %d: file size 0x%" PRIx64 " > memory size 0x%" PRIx64, i,
				    s->filesz, s->memsz);
		if (!in_file(e, s->off, s->filesz))
			return errf(err, errlen, -ENOEXEC,
				    "truncated ELF (segment %d data beyond end of file)", i);
		if (s->memsz == 0)
			continue;
		if (s->paddr + s->memsz < s->paddr)
			return errf(err, errlen, -ERANGE,
				    "segment %d: address 0x%" PRIx64 " + size 0x%" PRIx64 " overflows", i,
				    s->paddr, s->memsz);
		if (!gpa_ptr(gm, s->paddr, s->memsz)) {
			ram_desc(gm, ram, sizeof(ram));
			return errf(err, errlen, -ERANGE,
				    "segment 0x%" PRIx64 "-0x%" PRIx64 " outside guest memory (RAM is %s)",
				    s->paddr, s->paddr + s->memsz, ram);
		}
		if (s->paddr < PVH_BOOT_AREA_END)
			return errf(err, errlen, -ERANGE,
				    "segment 0x%" PRIx64 "-0x%" PRIx64
				    " overlaps the boot area 0x0-0x%llx (start_info, memmap, command line)",
				    s->paddr, s->paddr + s->memsz, PVH_BOOT_AREA_END);
		if (s->paddr + s->memsz > *end)
			*end = s->paddr + s->memsz;
		nload++;
	}
	if (!nload)
		return errf(err, errlen, -ENOEXEC, "ELF file has no loadable segments");
	return 0;
}

/* Scan one PT_NOTE segment for the Xen PHYS32 entry note. */
static int scan_notes(const struct elf_img *e, const struct seg *s, int idx, bool *found, uint32_t *entry,
		      char *err, size_t errlen)
{
	const uint8_t *p = e->p + s->off;
	uint64_t n = s->filesz, pos = 0, a = s->align == 8 ? 8 : 4;

	/* Offsets are aligned relative to the segment start (gABI: name at +12, descriptor and next
	 * note at the following `a`-aligned offsets); the trailing padding of the last note may be
	 * missing. All sums stay far below 2^64: n < 2^63, sizes < 2^32. */
	while (n - pos >= 12) {
		uint32_t namesz = rd32(p + pos), descsz = rd32(p + pos + 4), type = rd32(p + pos + 8);
		uint64_t doff = (pos + 12 + namesz + a - 1) & ~(a - 1);
		uint64_t next = (doff + descsz + a - 1) & ~(a - 1);
		const uint8_t *name = p + pos + 12, *desc = p + doff;
		uint64_t v;

		if (doff > n || descsz > n - doff)
			return errf(err, errlen, -ENOEXEC,
				    "truncated ELF note in segment %d (note overruns the segment)", idx);
		pos = next < n ? next : n;
		if (type != XEN_ELFNOTE_PHYS32_ENTRY || namesz != 4 || memcmp(name, "Xen", 4))
			continue;
		if (*found)
			return errf(err, errlen, -ENOEXEC, "more than one PVH entry note");
		if (descsz == 4) {
			v = rd32(desc);
		} else if (descsz == 8) {
			v = rd64(desc);
		} else {
			return errf(err, errlen, -ENOEXEC,
				    "PVH entry note has a %u-byte descriptor (want 4 or 8)", descsz);
		}
		if (v > UINT32_MAX)
			return errf(err, errlen, -ENOEXEC, "PVH entry 0x%" PRIx64 " is above 4 GiB", v);
		*entry = (uint32_t)v;
		*found = true;
	}
	return 0;
}

static int find_entry(const struct elf_img *e, uint32_t *entry, char *err, size_t errlen)
{
	bool found = false;
	int rc;

	for (int i = 0; i < e->nseg; i++) {
		const struct seg *s = &e->seg[i];

		if (s->type != PT_NOTE)
			continue;
		if (!in_file(e, s->off, s->filesz))
			return errf(err, errlen, -ENOEXEC,
				    "truncated ELF (note segment %d beyond end of file)", i);
		rc = scan_notes(e, s, i, &found, entry, err, errlen);
		if (rc)
			return rc;
	}
	if (!found)
		return errf(err, errlen, -ENOEXEC, "no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)");
	return 0;
}

static int check_entry(const struct elf_img *e, uint32_t entry, char *err, size_t errlen)
{
	for (int i = 0; i < e->nseg; i++) {
		const struct seg *s = &e->seg[i];

		if (s->type == PT_LOAD && entry >= s->paddr && entry - s->paddr < s->filesz)
			return 0;
	}
	return errf(err, errlen, -ENOEXEC, "PVH entry 0x%x is not inside a loaded segment", entry);
}

/* Write start_info, memmap and command line into the (already validated) boot area. */
static void write_boot_area(struct guest_mem *gm, const char *cmdline, size_t cmdlen)
{
	uint8_t *area = gpa_ptr(gm, 0, PVH_BOOT_AREA_END);
	struct hvm_memmap_table_entry mm[PVH_MEMMAP_MAX];
	struct hvm_start_info si;
	uint32_t n = 0;

	memset(mm, 0, sizeof(mm));
	for (int i = 0; i < gm->nr && n < PVH_MEMMAP_MAX - 1; i++) {
		uint64_t a = gm->r[i].gpa, end = gm->r[i].gpa + gm->r[i].size;

		if (a < PVH_RAM_START)
			a = PVH_RAM_START;
		if (a < end)
			mm[n++] = (struct hvm_memmap_table_entry){
				.addr = a, .size = end - a, .type = XEN_HVM_MEMMAP_TYPE_RAM};
		if (i == 0)
			mm[n++] = (struct hvm_memmap_table_entry){.addr = MEM_LOW_LIMIT,
								  .size = MEM_HIGH_BASE - MEM_LOW_LIMIT,
								  .type = XEN_HVM_MEMMAP_TYPE_RESERVED};
	}
	si = (struct hvm_start_info){
		.magic = XEN_HVM_START_MAGIC_VALUE,
		.version = 1,
		.cmdline_paddr = PVH_CMDLINE_GPA,
		.memmap_paddr = PVH_MEMMAP_GPA,
		.memmap_entries = n,
	};

	memset(area + PVH_START_INFO_GPA, 0, PVH_BOOT_AREA_END - PVH_START_INFO_GPA);
	memcpy(area + PVH_START_INFO_GPA, &si, sizeof(si));
	memcpy(area + PVH_MEMMAP_GPA, mm, n * sizeof(mm[0]));
	memcpy(area + PVH_CMDLINE_GPA, cmdline, cmdlen);
	mem_mark_dirty(gm, PVH_START_INFO_GPA, PVH_BOOT_AREA_END - PVH_START_INFO_GPA);
}

int pvh_load(struct guest_mem *gm, const void *elf, size_t elf_len, const char *cmdline,
	     struct pvh_image *out, char *err, size_t errlen)
{
	struct elf_img *e;
	uint64_t end;
	uint32_t entry = 0;
	size_t cmdlen;
	int rc;

	if (!cmdline)
		cmdline = "";
	cmdlen = strnlen(cmdline, PVH_CMDLINE_MAX);
	if (cmdlen >= PVH_CMDLINE_MAX)
		return errf(err, errlen, -E2BIG, "kernel command line too long (max %d bytes)",
			    PVH_CMDLINE_MAX - 1);
	if (!gpa_ptr(gm, 0, PVH_BOOT_AREA_END))
		return errf(err, errlen, -ERANGE, "guest RAM too small for the PVH boot area (0x0-0x%llx)",
			    PVH_BOOT_AREA_END);
	if (!elf)
		elf_len = 0;

	e = malloc(sizeof(*e));
	if (!e)
		return errf(err, errlen, -ENOMEM, "out of memory");
	e->p = elf;
	e->len = elf_len;
	e->nseg = 0;
	rc = parse_headers(e, err, errlen);
	if (rc)
		goto out;
	rc = find_entry(e, &entry, err, errlen);
	if (rc)
		goto out;
	if (e->type != ET_EXEC) {
		rc = errf(err, errlen, -ENOEXEC, "not an executable ELF file (e_type %u)", e->type);
		goto out;
	}
	rc = check_loads(e, gm, &end, err, errlen);
	if (rc)
		goto out;
	rc = check_entry(e, entry, err, errlen);
	if (rc)
		goto out;

	/* Validated: from here on nothing fails. */
	for (int i = 0; i < e->nseg; i++) {
		const struct seg *s = &e->seg[i];
		uint8_t *dst;

		if (s->type != PT_LOAD || s->memsz == 0)
			continue;
		dst = gpa_ptr(gm, s->paddr, s->memsz);
		memcpy(dst, e->p + s->off, s->filesz);
		mem_mark_dirty(gm, s->paddr, s->filesz);
		mem_zero(gm, s->paddr + s->filesz, s->memsz - s->filesz); /* bss: allocates nothing */
	}
	write_boot_area(gm, cmdline, cmdlen + 1);
	*out = (struct pvh_image){.entry = entry, .start_info = PVH_START_INFO_GPA, .kernel_end = end};
	rc = 0;
out:
	free(e);
	return rc;
}

/* Read all of fd (a regular file of st_size bytes) into a fresh buffer. */
static int read_all(int fd, size_t size, uint8_t **buf, size_t *len)
{
	uint8_t *b = malloc(size);
	size_t got = 0;

	if (!b)
		return -ENOMEM;
	while (got < size) {
		ssize_t r = read(fd, b + got, size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int rc = -errno;

			free(b);
			return rc;
		}
		if (r == 0)
			break; /* file shrank: the parser sees the shorter image */
		got += (size_t)r;
	}
	*buf = b;
	*len = got;
	return 0;
}

int pvh_load_file(struct guest_mem *gm, const char *path, const char *cmdline, struct pvh_image *out,
		  char *err, size_t errlen)
{
	char msg[256];
	uint8_t *buf = NULL;
	size_t len = 0;
	struct stat st;
	int fd, rc;

	if (!path || !*path)
		return errf(err, errlen, -EINVAL, "no kernel file given");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		return errf(err, errlen, rc, "cannot open kernel %s: %s", path, strerror(-rc));
	}
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		errf(err, errlen, rc, "cannot stat kernel %s: %s", path, strerror(-rc));
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		rc = errf(err, errlen, -EISDIR, "kernel %s: is a directory", path);
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = errf(err, errlen, -EINVAL, "kernel %s: not a regular file", path);
		goto out;
	}
	if (st.st_size == 0) {
		rc = errf(err, errlen, -EINVAL, "kernel %s: empty file", path);
		goto out;
	}
	if ((uint64_t)st.st_size > PVH_MAX_FILE) {
		rc = errf(err, errlen, -EFBIG, "kernel %s: too large (%lld bytes, max %llu MiB)", path,
			  (long long)st.st_size, PVH_MAX_FILE >> 20);
		goto out;
	}
	rc = read_all(fd, (size_t)st.st_size, &buf, &len);
	if (rc) {
		errf(err, errlen, rc, "cannot read kernel %s: %s", path, strerror(-rc));
		goto out;
	}
	rc = pvh_load(gm, buf, len, cmdline, out, msg, sizeof(msg));
	if (rc)
		errf(err, errlen, rc, "kernel %s: %s", path, msg);
out:
	free(buf);
	close(fd);
	return rc;
}
