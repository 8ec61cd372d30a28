/* vmm_disk.c — a VM's disks: attach every --disk as virtio-blk "diskN", kick them after a restore. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/errf.h"
#include "hv/dev/virtio_blk.h"
#include "vmm/diskopt.h"
#include "vmm/vmm_priv.h"

int vmm_disk_attach_all(struct vmm *v, char *cmdline, size_t cmdlen, char *err, size_t errlen)
{
	size_t before = strlen(vm_dev_cmdline(v->vm));
	struct disk_opts *d = NULL;
	const char *frags;
	int rc = 0;

	if (!v->o.nr_disk)
		return 0;
	d = malloc(sizeof(*d));
	if (!d)
		return errf(err, errlen, -ENOMEM, "out of memory");
	for (int i = 0; i < v->o.nr_disk && !rc; i++) {
		struct virtio_blk_cfg c;
		char name[HV_DEV_NAME_MAX];

		rc = disk_opts_parse(v->o.disk[i], d, err, errlen);
		if (rc)
			break;
		c = (struct virtio_blk_cfg){.path = d->path,
					    .readonly = d->readonly,
					    .id = d->id[0] ? d->id : NULL,
					    .lock_later = v->o.disk_lock_later};
		snprintf(name, sizeof(name), "disk%d", i);
		rc = virtio_blk_attach(v->vm, name, &c, &v->disk[i], err, errlen);
		if (!rc)
			v->nr_disk = i + 1;
	}
	free(d);
	if (rc)
		return rc;
	frags = vm_dev_cmdline(v->vm) + before; /* this call's fragments: after the network devices' */
	while (*frags == ' ')
		frags++;
	if (!*frags)
		return 0;
	if (strlen(cmdline) + 1 + strlen(frags) + 1 > cmdlen)
		return errf(err, errlen, -E2BIG, "guest command line too long with the disks");
	if (*cmdline)
		strcat(cmdline, " ");
	strcat(cmdline, frags);
	return 0;
}

void vmm_disk_kick_all(struct vmm *v)
{
	for (int i = 0; i < v->nr_disk; i++)
		virtio_blk_kick(v->disk[i]);
}

int vmm_disk_count(const struct vmm *v)
{
	return v->nr_disk;
}

struct virtio_blk *vmm_disk(struct vmm *v, int i)
{
	return i >= 0 && i < v->nr_disk ? v->disk[i] : NULL;
}
