/* cmd_console.c — `doppel console NAME`: the VM's serial console on this terminal; Ctrl-] detaches. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <json-c/json.h>

#include "tools/common/ctl_client.h"
#include "tools/doppel/doppel.h"

#define ESCAPE_CHAR 0x1d /* Ctrl-] as in virsh console and telnet */

static void usage(void)
{
	printf("usage: doppel console NAME [--control PATH] [--timeout-ms MS]\n"
	       "\n"
	       "Attach this terminal to the VM's serial console: its output is printed, what you type\n"
	       "goes to its UART. Ctrl-] detaches (the VM runs on). One console client at a time; the\n"
	       "serial log (--serial file:PATH) is written as before. Ends when the VM stops.\n"
	       "\n" DOPPEL_CTL_OPTHELP);
}

/* Write all of buf to fd. 0 or -errno. */
static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -errno;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Stream until detach (0), the VM's end (0) or an error (1). */
static int pump(int sock, const char *label)
{
	struct pollfd p[2] = {{.fd = STDIN_FILENO, .events = POLLIN}, {.fd = sock, .events = POLLIN}};
	char buf[4096];

	for (;;) {
		ssize_t n;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return doppel_error("console", DOPPEL_EXIT_FAIL, "poll: %s", strerror(errno));
		}
		if (p[1].revents) {
			n = read(sock, buf, sizeof(buf));
			if (n <= 0) {
				fprintf(stderr, "\r\n[doppel console: %s closed the console]\r\n", label);
				return DOPPEL_EXIT_OK;
			}
			if (write_all(STDOUT_FILENO, buf, (size_t)n))
				return DOPPEL_EXIT_FAIL;
		}
		if (p[0].revents) {
			char *esc;

			n = read(STDIN_FILENO, buf, sizeof(buf));
			if (n <= 0) {
				p[0].fd =
					-1; /* stdin ended: keep showing output until Ctrl-] or the VM's end */
				continue;
			}
			esc = memchr(buf, ESCAPE_CHAR, (size_t)n);
			if (write_all(sock, buf, esc ? (size_t)(esc - buf) : (size_t)n))
				return doppel_error("console", DOPPEL_EXIT_FAIL, "%s closed the console",
						    label);
			if (esc) {
				fprintf(stderr, "\r\n[doppel console: detached from %s]\r\n", label);
				return DOPPEL_EXIT_OK;
			}
		}
	}
}

int cmd_console(int argc, char **argv)
{
	static const struct option opts[] = {DOPPEL_CTL_LONGOPTS, {0}};
	struct json_object *req, *reply = NULL;
	struct termios saved, raw;
	struct doppel_ctl_opts o;
	bool tty;
	char err[512];
	int c, rc, fd;

	doppel_ctl_opts_init(&o, "console");
	if (doppel_opts_begin(argc, argv, opts))
		return DOPPEL_EXIT_OK;
	while ((c = getopt_long(argc, argv, DOPPEL_CTL_OPTSTRING, opts, NULL)) != -1) {
		if (c == 'h') {
			usage();
			return DOPPEL_EXIT_OK;
		}
		if (c == '?' || c == ':')
			return doppel_bad_option("console", c, argv);
		rc = doppel_ctl_opt(&o, c, optarg);
		if (rc)
			return rc == 1 ? doppel_bad_option("console", '?', argv) : rc;
	}
	rc = doppel_ctl_finish(&o, argc, argv);
	if (rc)
		return rc;
	req = json_object_new_object();
	json_object_object_add(req, "cmd", json_object_new_string("console"));
	rc = ctl_call_stream(o.path, req, &reply, o.timeout_ms, &fd, err, sizeof(err));
	json_object_put(req);
	if (rc) {
		rc = (int)ctl_outcome(rc, reply);
		json_object_put(reply);
		return doppel_error("console", rc, "%s", err);
	}
	json_object_put(reply);
	tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
	if (tty) {
		raw = saved;
		cfmakeraw(&raw);
		tcsetattr(STDIN_FILENO, TCSANOW, &raw);
	}
	fprintf(stderr, "[doppel console: connected to %s; escape character is ^]]\r\n", o.label);
	rc = pump(fd, o.label);
	if (tty)
		tcsetattr(STDIN_FILENO, TCSANOW, &saved);
	close(fd);
	return rc;
}
