/* remus.c — scaffolding until the Remus engine lands. */
#include <errno.h>
#include <stdio.h>

#include "replication/remus.h"

int remus_setup(struct vmm *v)
{
	(void)v;
	return 0;
}

int remus_standby_listen(struct vmm *v, const char *addr, char *err, size_t errlen)
{
	(void)v, (void)addr;
	snprintf(err, errlen, "standby mode is not available yet");
	return -ENOSYS;
}
