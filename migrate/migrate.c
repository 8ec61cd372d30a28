/* migrate.c — scaffolding until the migration engine lands. */
#include <errno.h>
#include <stdio.h>

#include "migrate/migrate.h"

int migrate_setup(struct vmm *v)
{
	(void)v;
	return 0;
}

int migrate_incoming_listen(struct vmm *v, const char *addr, char *err, size_t errlen)
{
	(void)v, (void)addr;
	snprintf(err, errlen, "incoming migration is not available yet");
	return -ENOSYS;
}
