/* spawner.c — a helper process, forked before the seccomp filter, that runs one fixed site command. */
/*
 * Why: the VM process's allowlist (vmm/sandbox.c) is inherited across fork and execve, so a site's
 * STONITH agent started from inside it (a shell, python, ipmitool) dies with SIGSYS at its first
 * unlisted call. The helper is forked while the process is still unrestricted; from then on it only
 * reads one-byte requests on a SOCK_SEQPACKET socket: RUN (fork, setpgid, exec `sh -c CMD`), KILL (the
 * command's process group), and EOF (the VM process is gone: kill the command, exit). The command text
 * is fixed at start: a compromised VM process can make the helper run the configured command, never
 * another. Between fork and _exit the helper only makes async-signal-safe calls (the VM process may
 * have threads).
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/spawner.h"
#include "common/clock.h"
#include "common/errf.h"

#define POLL_MS 10

enum { SP_RUN = 'R', SP_KILL = 'K', SP_PID = 'P', SP_EXIT = 'X', SP_FAIL = 'E' };

struct sp_msg {
	char op;
	int val; /* SP_PID: pid; SP_EXIT: waitpid status; SP_FAIL: errno */
};

struct spawner {
	int sock;
	pid_t helper;
};

static void say(int sock, char op, int val)
{
	struct sp_msg m = {.op = op, .val = val};

	(void)send(sock, &m, sizeof(m), MSG_NOSIGNAL);
}

static void stop_child(pid_t c, int *st)
{
	kill(-c, SIGKILL);
	kill(c, SIGKILL);
	while (waitpid(c, st, 0) < 0 && errno == EINTR)
		;
}

/* One run: exec the command in its own process group, report its pid, then its end. */
static void helper_run(int sock, const char *cmd)
{
	struct sp_msg m;
	int st = 0;
	pid_t c = fork();

	if (c == 0) {
		setpgid(0, 0);
		close(sock);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	if (c < 0) {
		say(sock, SP_FAIL, errno);
		return;
	}
	say(sock, SP_PID, c);
	for (;;) {
		struct pollfd p = {.fd = sock, .events = POLLIN};
		pid_t w = waitpid(c, &st, WNOHANG);

		if (w == c || (w < 0 && errno != EINTR))
			break;
		if (poll(&p, 1, POLL_MS) <= 0)
			continue;
		ssize_t n = recv(sock, &m, sizeof(m), 0);
		if (n <= 0) { /* the VM process is gone: so is its command */
			stop_child(c, &st);
			_exit(0);
		}
		if (m.op == SP_KILL) {
			stop_child(c, &st);
			break;
		}
	}
	say(sock, SP_EXIT, st);
}

static __attribute__((noreturn)) void helper_main(int sock, pid_t parent, const char *cmd)
{
	struct sp_msg m;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(0);
	/* Nothing of the VM's (KVM, taps, disks, listeners) reaches the command: keep 0-2 and the socket. */
	if (sock != 3) {
		if (dup2(sock, 3) < 0)
			_exit(1);
		sock = 3;
	}
	close_range(4, ~0u, 0);
	for (;;) {
		ssize_t n = recv(sock, &m, sizeof(m), 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			_exit(0);
		if (m.op == SP_RUN)
			helper_run(sock, cmd);
	}
}

int spawner_start(const char *cmd, struct spawner **out, char *err, size_t errlen)
{
	struct spawner *s = calloc(1, sizeof(*s));
	char *copy = strdup(cmd);
	pid_t parent = getpid();
	int sv[2], rc;

	if (!s || !copy) {
		rc = errf(err, errlen, -ENOMEM, "spawner: out of memory");
		goto err;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv)) {
		rc = errf(err, errlen, -errno, "spawner: socketpair: %s", strerror(errno));
		goto err;
	}
	s->helper = fork();
	if (s->helper == 0) {
		close(sv[0]);
		helper_main(sv[1], parent, copy);
	}
	rc = -errno;
	close(sv[1]);
	if (s->helper < 0) {
		close(sv[0]);
		rc = errf(err, errlen, rc, "spawner: fork: %s", strerror(-rc));
		goto err;
	}
	s->sock = sv[0];
	free(copy);
	*out = s;
	return 0;
err:
	free(copy);
	free(s);
	return rc;
}

int spawner_run(struct spawner *s, uint64_t deadline_ns, atomic_bool *cancel, _Atomic int *pid, int *wstatus,
		char *err, size_t errlen)
{
	struct sp_msg m = {.op = SP_RUN};
	int rc = 0;
	bool killed = false;

	if (send(s->sock, &m, sizeof(m), MSG_NOSIGNAL) != (ssize_t)sizeof(m))
		return errf(err, errlen, -EPIPE, "the fence helper is gone: %s", strerror(errno));
	for (;;) {
		struct pollfd p = {.fd = s->sock, .events = POLLIN};
		int n = poll(&p, 1, POLL_MS);

		if (n < 0 && errno != EINTR)
			return errf(err, errlen, -errno, "poll: %s", strerror(errno));
		if (n > 0) {
			ssize_t got = recv(s->sock, &m, sizeof(m), 0);
			if (got != (ssize_t)sizeof(m)) {
				atomic_store(pid, 0);
				return errf(err, errlen, -EPIPE, "the fence helper is gone");
			}
			if (m.op == SP_PID)
				atomic_store(pid, m.val);
			else if (m.op == SP_FAIL)
				return errf(err, errlen, -m.val, "cannot run the command: %s",
					    strerror(m.val));
			else if (m.op == SP_EXIT)
				break;
			continue;
		}
		if (killed)
			continue;
		if (cancel && atomic_load(cancel))
			rc = -ECANCELED;
		else if (now_ns() > deadline_ns)
			rc = -ETIMEDOUT;
		if (rc) {
			m.op = SP_KILL;
			(void)send(s->sock, &m, sizeof(m), MSG_NOSIGNAL);
			killed = true;
		}
	}
	atomic_store(pid, 0);
	*wstatus = m.val;
	return rc;
}

void spawner_stop(struct spawner *s)
{
	if (!s)
		return;
	close(s->sock); /* EOF: the helper kills a running command and exits */
	while (waitpid(s->helper, NULL, 0) < 0 && errno == EINTR)
		;
	free(s);
}
