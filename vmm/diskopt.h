/* diskopt.h — the runtime's `--disk path=FILE[,readonly][,id=NAME]` option. */
#ifndef DOPPEL_VMM_DISKOPT_H
#define DOPPEL_VMM_DISKOPT_H

#include <stdbool.h>
#include <stddef.h>

#define DISKOPT_PATH_MAX 4096
#define DISKOPT_ID_MAX 20 /* VIRTIO_BLK_ID_BYTES */

struct disk_opts {
	char path[DISKOPT_PATH_MAX]; /* raw image file or block device */
	bool readonly;
	char id[DISKOPT_ID_MAX + 1]; /* GET_ID string, "" = none */
};

/* Parse "path=FILE[,readonly][,id=NAME]" (keys in any order, each at most once, path required; a path
 * cannot contain ','; NAME is 1..20 printable ASCII characters without ',' or spaces). Pure function:
 * the file is not opened. Returns 0, or -EINVAL with one line in err. */
int disk_opts_parse(const char *s, struct disk_opts *o, char *err, size_t errlen);

#endif
