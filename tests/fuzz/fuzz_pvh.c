/* fuzz_pvh.c — libFuzzer target: arbitrary bytes as a PVH ELF image, loaded into 16 MiB of RAM. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hv/mem.h"
#include "hv/pvh.h"

#define RAM_SIZE (16u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Fuzzer-local state (the target is single-threaded): allocated once, reused per input. */
	static uint8_t *ram;
	struct guest_mem gm;
	struct pvh_image img;
	char err[256];
	int rc;

	if (!ram && !(ram = calloc(1, RAM_SIZE)))
		return 0;
	if (mem_init_buffer(&gm, ram, RAM_SIZE))
		return 0;
	err[0] = 0;
	rc = pvh_load(&gm, data, size, "console=ttyS0", &img, err, sizeof(err));
	if (rc == 0) {
		/* Success must describe a coherent image. */
		if (img.entry < PVH_BOOT_AREA_END || img.kernel_end > RAM_SIZE ||
		    img.start_info != PVH_START_INFO_GPA)
			__builtin_trap();
	} else if (rc > 0 || !err[0] || strchr(err, '\n')) {
		__builtin_trap(); /* errors are negative with a one-line message */
	}
	mem_destroy(&gm);
	return 0;
}
