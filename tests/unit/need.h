/* need.h — unit-test set-up requirements: a missing requirement FAILS the test with a clear
 * message.
 *
 * Include after <cmocka.h>. Tests marked as needing /dev/kvm or build/guest.elf never skip: we
 * always run on a KVM host, and guest.elf is built by `make binaries` (a prerequisite of `make
 * unit`).
 */
#ifndef DOPPEL_TESTS_NEED_H
#define DOPPEL_TESTS_NEED_H

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Fails the calling test unless /dev/kvm can be opened read-write. */
static inline void need_kvm(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		fail_msg("set-up: open /dev/kvm: %s (this test needs KVM; it fails rather than skips)",
			 strerror(errno));
	close(fd);
}

/* Writes $DOPPEL_BUILD/guest.elf (default build/guest.elf) into path; fails the test when
 * unreadable. */
static inline void need_guest_elf(char *path, size_t len)
{
	const char *b = getenv("DOPPEL_BUILD");

	snprintf(path, len, "%s/guest.elf", b && *b ? b : "build");
	if (access(path, R_OK))
		fail_msg("set-up: %s: %s (build it with `make binaries`, or set DOPPEL_BUILD)", path,
			 strerror(errno));
}

#endif
