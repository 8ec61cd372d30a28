/* pvh.h — PVH boot: load an x86 ELF kernel with a Xen PHYS32 entry note and build hvm_start_info. */
#ifndef DOPPEL_HV_PVH_H
#define DOPPEL_HV_PVH_H

#include <stddef.h>
#include <stdint.h>

#include "hv/mem.h"

/*
 * Guest-physical layout written by the loader (the low 32 KiB are the "boot area"; no PT_LOAD
 * segment may overlap it):
 *
 *   0x0000 .. 0x1000   page 0: left zero, not reported as RAM in the memmap
 *   0x1000 .. 0x6000   unused by the loader (RAM; free for the VMM, e.g. boot GDT/page tables)
 *   0x6000 .. 0x6038   struct hvm_start_info          (PVH_START_INFO_GPA; %ebx at entry)
 *   0x6100 .. 0x6200   struct hvm_memmap_table_entry[] (PVH_MEMMAP_GPA, at most PVH_MEMMAP_MAX)
 *   0x7000 .. 0x8000   kernel command line, NUL-terminated (PVH_CMDLINE_GPA, PVH_CMDLINE_MAX bytes)
 *
 * Memmap handed to the guest, sorted by address:
 *   RAM      [0x1000, end of low RAM)            (low RAM is [0, min(size, MEM_LOW_LIMIT)))
 *   reserved [MEM_LOW_LIMIT, MEM_HIGH_BASE)      the 3..4 GiB MMIO hole (virtio-mmio lives here)
 *   RAM      [MEM_HIGH_BASE, MEM_HIGH_BASE+rest) only when RAM is larger than MEM_LOW_LIMIT
 */
#define PVH_BOOT_AREA_END 0x8000ull
#define PVH_RAM_START 0x1000ull
#define PVH_START_INFO_GPA 0x6000ull
#define PVH_MEMMAP_GPA 0x6100ull
#define PVH_MEMMAP_MAX 8
#define PVH_CMDLINE_GPA 0x7000ull
#define PVH_CMDLINE_MAX 4096 /* bytes including the NUL: at most 4095 characters */

#define PVH_MAX_PHDRS 128 /* more program headers than this is rejected */
#define PVH_MAX_FILE (256ull << 20) /* pvh_load_file refuses larger kernels */

/* Xen public/arch-x86/hvm/start_info.h, version 1. */
#define XEN_HVM_START_MAGIC_VALUE 0x336ec578u
#define XEN_ELFNOTE_PHYS32_ENTRY 18
struct hvm_start_info {
	uint32_t magic; /* XEN_HVM_START_MAGIC_VALUE */
	uint32_t version; /* 1 */
	uint32_t flags; /* SIF_xxx: 0 */
	uint32_t nr_modules; /* 0 */
	uint64_t modlist_paddr; /* 0 */
	uint64_t cmdline_paddr; /* PVH_CMDLINE_GPA */
	uint64_t rsdp_paddr; /* 0: no ACPI */
	uint64_t memmap_paddr; /* PVH_MEMMAP_GPA */
	uint32_t memmap_entries;
	uint32_t reserved; /* 0 */
};

#define XEN_HVM_MEMMAP_TYPE_RAM 1
#define XEN_HVM_MEMMAP_TYPE_RESERVED 2
struct hvm_memmap_table_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
	uint32_t reserved;
};

struct pvh_image {
	uint32_t entry; /* guest-physical 32-bit entry point (from the PVH note) */
	uint32_t start_info; /* gpa of struct hvm_start_info, for %ebx (PVH_START_INFO_GPA) */
	uint64_t kernel_end; /* highest p_paddr + p_memsz over the loaded segments (exclusive) */
};

/*
 * Load the ELF image `elf` (`elf_len` bytes, any alignment) into guest RAM `gm` and write the
 * boot area (start_info, memmap, command line). Accepted: ELFCLASS64 + EM_X86_64 or ELFCLASS32 +
 * EM_386, little endian, ET_EXEC, with a PT_NOTE holding a "Xen" note of type
 * XEN_ELFNOTE_PHYS32_ENTRY whose 4- or 8-byte descriptor is a 32-bit physical address inside the
 * file-backed part of a PT_LOAD segment. Segments are placed at p_paddr; each must lie inside one
 * RAM region and outside the boot area. `cmdline` may be NULL (empty).
 * Everything is validated before guest memory is touched: on error RAM is unchanged.
 * Every write marks the touched pages device-dirty.
 * Returns 0 and fills *out, or a negative errno with a one-line reason in err (errlen bytes):
 *   -ENOEXEC malformed/unsupported image or missing/bad PVH note, -ERANGE segment outside RAM or
 *   over the boot area (or RAM too small for the boot area), -E2BIG command line too long.
 * Never reads outside [elf, elf + elf_len).
 */
int pvh_load(struct guest_mem *gm, const void *elf, size_t elf_len, const char *cmdline,
	     struct pvh_image *out, char *err, size_t errlen);

/*
 * Read the kernel file at `path` (regular, non-empty, at most PVH_MAX_FILE bytes) and pvh_load it.
 * Errors are prefixed with the file name: "cannot open kernel PATH: <strerror>",
 * "kernel PATH: not an ELF file", ... Returns 0 or a negative errno as pvh_load, plus the open/read
 * errno, -EISDIR, -EINVAL (not a regular file / empty), -EFBIG (too large), -ENOMEM.
 */
int pvh_load_file(struct guest_mem *gm, const char *path, const char *cmdline, struct pvh_image *out,
		  char *err, size_t errlen);

#endif
