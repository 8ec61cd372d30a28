/* fuzz_config.c — libFuzzer target: arbitrary bytes as a VM config file (vmm/config.c). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "vmm/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vmm_config c;
	char err[4096] = "";
	int rc = vmm_config_parse((const char *)data, size, &c, err, sizeof(err));

	if (rc == 0) {
		/* a success names the VM and the kernel, and every NIC/disk string is set */
		if (!c.o.name || !c.o.kernel || c.o.nr_net < 0 || c.o.nr_net > VMM_MAX_NETS ||
		    c.o.nr_disk < 0 || c.o.nr_disk > VMM_MAX_DISKS)
			__builtin_trap();
		for (int i = 0; i < c.o.nr_net; i++)
			if (!c.o.net[i] || strncmp(c.o.net[i], "tap=", 4))
				__builtin_trap();
		for (int i = 0; i < c.o.nr_disk; i++)
			if (!c.o.disk[i] || strncmp(c.o.disk[i], "path=", 5))
				__builtin_trap();
		if (c.prot.present && !c.prot.peer)
			__builtin_trap();
		vmm_config_free(&c);
	} else if (rc > 0 || !err[0]) {
		/* a failure says why */
		__builtin_trap();
	}
	return 0;
}
