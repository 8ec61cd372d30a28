/* doppel.h — the doppel CLI: one function per verb, and the helpers verbs share (implemented in main.c). */
#ifndef DOPPEL_DOPPEL_H
#define DOPPEL_DOPPEL_H

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/un.h>

struct json_object;

/* Exit codes of every verb (the man page, docs/doppel.1.scd, lists them). */
#define DOPPEL_EXIT_OK 0
#define DOPPEL_EXIT_FAIL 1 /* the operation failed */
#define DOPPEL_EXIT_USAGE 2 /* bad command line */
#define DOPPEL_EXIT_NOT_RUNNING 3 /* no such VM running: no control socket, or nothing listening */
#define DOPPEL_EXIT_REFUSED 4 /* the VM refused the request because of its state */
/* `doppel run` only: */
#define DOPPEL_EXIT_FENCED 5 /* the VM fenced itself (another copy may be live) */
#define DOPPEL_EXIT_GUEST 6 /* the guest exited with a nonzero status (see --exit-status-file) */

/*
 * A verb: `doppel NAME args...` calls fn(argc, argv) with argv[0] = the verb's name. It parses its own
 * options with getopt_long (after doppel_getopt_reset()), handles --help itself (usage on stdout,
 * returns 0) and returns one of the exit codes above. A new verb is one new file plus one row in the
 * table in main.c.
 */
struct doppel_verb {
	const char *name;
	const char *summary; /* one line, for `doppel --help` */
	int (*fn)(int argc, char **argv);
};

int cmd_run(int argc, char **argv); /* tools/doppel/cmd_run.c */
int cmd_status(int argc, char **argv);
int cmd_pause(int argc, char **argv);
int cmd_unprotect(int argc, char **argv);
int cmd_resume(int argc, char **argv);
int cmd_stop(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);
int cmd_migrate(int argc, char **argv); /* tools/doppel/cmd_migrate.c */
int cmd_protect(int argc, char **argv); /* tools/doppel/cmd_protect.c */
int cmd_failover(int argc, char **argv); /* tools/doppel/cmd_failover.c */
int cmd_events(int argc, char **argv); /* tools/doppel/cmd_events.c */
int cmd_metrics(int argc, char **argv); /* tools/doppel/cmd_metrics.c */
int cmd_switchover(int argc, char **argv); /* tools/doppel/cmd_switchover.c */
int cmd_reprotect(int argc, char **argv); /* tools/doppel/cmd_reprotect.c */
int cmd_drill(int argc, char **argv); /* tools/doppel/cmd_drill.c */
int cmd_fleet(int argc, char **argv); /* tools/doppel/cmd_fleet.c */
int cmd_list(int argc, char **argv); /* tools/doppel/cmd_list.c */
int cmd_console(int argc, char **argv); /* tools/doppel/cmd_console.c */
int cmd_version(int argc, char **argv); /* tools/doppel/cmd_version.c */

/* The version string: `git describe` at build time (Makefile), else the Makefile's VERSION. */
const char *doppel_version(void);

/* True when the command line has --json (or -j) before any "--": every error is then printed as
 * {"ok":false,"error":"...","exit":N} on stdout instead of a line on stderr. */
bool doppel_json_mode(void);

/* Print an error ("doppel VERB: <message>" on stderr, or the JSON form under --json) and return code. */
int doppel_error(const char *verb, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Re-initialise getopt for a fresh argv (glibc: optind = 0 forces a full re-init, including the
 * permutation state, which optind = 1 does not). Also sets opterr = 0: verbs print their own errors. */
void doppel_getopt_reset(void);

/* Every verb starts its parsing with this: doppel_getopt_reset(), and if argv holds the hidden option
 * --list-options, print every long option of `opts` (the very table given to getopt_long) one per
 * line as "--name" and return true: the verb then returns 0. tests/system/test_cli.py compares this
 * with the options its --help lists, so help and parser cannot drift apart. */
bool doppel_opts_begin(int argc, char **argv, const struct option *opts);

/* Print "doppel VERB: <message> (try doppel VERB --help)" on stderr; returns DOPPEL_EXIT_USAGE. */
int doppel_usage_error(const char *verb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Report the option getopt_long just rejected (it returned '?' or ':'); returns DOPPEL_EXIT_USAGE. */
int doppel_bad_option(const char *verb, int c, char **argv);

/* --tls-dir DIR / --tls-peer-name NAME of protect and migrate into the request ("tls_dir" made
 * absolute: the VM process resolves it, not this one). 0, or the usage exit status (one line). */
int doppel_add_tls(const char *verb, struct json_object *req, const char *dir, const char *peer_name);

/* ---- verbs that talk to a running VM over its control socket ---------------------------------------- */

#define DOPPEL_CTL_TIMEOUT_MS 10000

struct doppel_ctl_opts {
	const char *verb; /* for messages */
	const char *name; /* VM name (positional), may be NULL when --control is given */
	const char *control; /* --control PATH, or NULL */
	bool json; /* --json */
	int timeout_ms; /* --timeout-ms MS */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* resolved socket path */
	const char *label; /* name, or the path when no name: what to call the VM in messages */
};

/* The options every control verb accepts; a verb appends its own (short options free: all but c j t h)
 * and ends the array with {0}. Optstring for these: DOPPEL_CTL_OPTSTRING. */
/* clang-format off */
#define DOPPEL_CTL_LONGOPTS                                                                                  \
	{"control", required_argument, NULL, 'c'}, {"json", no_argument, NULL, 'j'},                         \
	{"timeout-ms", required_argument, NULL, 't'}, {"timeout", required_argument, NULL, 't'},             \
	{"help", no_argument, NULL, 'h'}
#define DOPPEL_CTL_OPTSTRING ":c:jt:h"
/* Usage lines for them, to append to a verb's usage text: DOPPEL_CTL_OPTHELP for a verb whose
 * --timeout-ms is the reply timeout with the default 10000; otherwise DOPPEL_CTL_OPTHELP_BASE plus the
 * verb's own --timeout-ms line. */
#define DOPPEL_CTL_OPTHELP_BASE                                                                              \
	"  NAME                 the VM: its control socket is /run/doppel/NAME.sock, or the one it\n"        \
	"                       registered (doppel list) when started with its own --control\n"            \
	"  -c, --control PATH   use this control socket instead (NAME is then optional)\n"                   \
	"  -j, --json           print the reply as one JSON object (errors too, on stdout)\n"               \
	"  -h, --help           show this help\n"
#define DOPPEL_CTL_OPTHELP                                                                                   \
	DOPPEL_CTL_OPTHELP_BASE                                                                              \
	"  -t, --timeout-ms MS  give up waiting for the reply after MS milliseconds (default\n"             \
	"                       10000; --timeout is the old name)\n"
/* clang-format on */

void doppel_ctl_opts_init(struct doppel_ctl_opts *o, const char *verb);

/* Handle option c (one of c, j, t from getopt_long) into o. Returns 0 if handled, 1 if c is not a
 * common option (the verb's own), DOPPEL_EXIT_USAGE after printing an error for a bad value. */
int doppel_ctl_opt(struct doppel_ctl_opts *o, int c, const char *arg);

/* After the option loop: take NAME from argv[optind] (the only positional allowed unless the verb
 * consumes more first), validate it, resolve o->path. Returns 0 or DOPPEL_EXIT_USAGE (printed). */
int doppel_ctl_finish(struct doppel_ctl_opts *o, int argc, char **argv);

/* Send req (a JSON object with "cmd"; not consumed) and wait for the reply. Returns 0 with *reply set
 * (caller puts it) when the VM answered ok; otherwise prints the error (doppel_error), sets
 * *reply = NULL and returns DOPPEL_EXIT_NOT_RUNNING (no VM there), DOPPEL_EXIT_REFUSED (the VM refused:
 * "refused" in its reply) or DOPPEL_EXIT_FAIL. */
int doppel_ctl_request(const struct doppel_ctl_opts *o, struct json_object *req, struct json_object **reply);

/* Send req (consumed), then print the reply: as JSON with --json, else with print (or
 * doppel_print_tree when print is NULL). Returns the verb's exit code. */
int doppel_ctl_run(const struct doppel_ctl_opts *o, struct json_object *req,
		   void (*print)(const struct doppel_ctl_opts *o, struct json_object *reply));
/* Print reply without its "ok" key as one JSON line on stdout. */
void doppel_print_json(struct json_object *reply);

/* Print obj's keys (except "ok") readably: "key: value" per line, nested objects indented by 2. */
void doppel_print_tree(FILE *f, struct json_object *obj, int indent);

/* A verb that sends {"cmd": cmd} and prints the reply: --json prints it as JSON, otherwise print()
 * (or doppel_print_tree when print is NULL). Everything a verb like pause/resume/stop needs. */
struct doppel_simple_verb {
	const char *verb;
	const char *cmd;
	const char *description; /* one or more lines after the usage line in --help */
	void (*print)(const struct doppel_ctl_opts *o, struct json_object *reply);
};
int doppel_simple_verb(const struct doppel_simple_verb *v, int argc, char **argv);

#endif
