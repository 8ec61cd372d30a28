/* kv_main.c — doppel-kv command line: single request, load generator, reference server. */
#include "tools/kv/kv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LOAD 10000000ull
#define MAX_WINDOW 4096

static const char usage[] =
	"usage:\n"
	"  doppel-kv HOST[:PORT] SET|GET|INCR KEY [VALUE] [--timeout MS] [--retries N]\n"
	"  doppel-kv HOST[:PORT] --load N --rate R [--window W] [--cmd INCR|SET|GET|mix]\n"
	"            [--key K | --keys N] [--timeout MS] [--deadline S] [--log FILE.jsonl] [--json]\n"
	"  doppel-kv --serve [ADDR:]PORT [--verbose]\n"
	"HOST: name, IPv4, IPv6 or [IPv6]; PORT defaults to 7777.\n"
	"Single request: prints VALUE; ERR -> line on stderr, exit 1; no reply -> exit 3; usage -> 2.\n"
	"Load: N requests paced at R/s (0 = unpaced), at most W in flight (default 32); each retried\n"
	"  with the same ID every --timeout ms (default 100) until acknowledged or --deadline\n"
	"  (default N/R*2+10 s). --key K (default k), --keys N uses keys K0..K(N-1). --log writes one\n"
	"  JSON line per acknowledged op; --json prints the summary as one JSON object.\n"
	"  Exit 0 when every request was acknowledged, 1 otherwise.\n";

static int bad(const char *what, const char *val)
{
	fprintf(stderr, "doppel-kv: invalid %s '%s' (try --help)\n", what, val ? val : "(missing)");
	return 2;
}

static bool parse_num(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t v;

	if (!s || kv_parse_u64(s, strlen(s), &v) || v < min || v > max)
		return false;
	*out = v;
	return true;
}

static bool parse_double(const char *s, double min, double max, double *out)
{
	char *end;
	double v;

	if (!s || !*s)
		return false;
	errno = 0;
	v = strtod(s, &end);
	if (errno || *end || !(v >= min && v <= max))
		return false;
	*out = v;
	return true;
}

/* The command line, parsed. */
struct cli {
	struct kv_client_opts o;
	const char *pos[4], *serve;
	int npos;
	bool verbose, have_rate, have_timeout;
};

/* An option taking a value (val, NULL if missing) into c->o. Returns -1 when done, 2 on a bad
 * value, 0 if `a` is not one of them. */
static int value_opt(struct cli *c, const char *a, const char *val)
{
	struct kv_client_opts *o = &c->o;
	uint64_t v;

	if (!strcmp(a, "--serve")) {
		if (!val)
			return bad("--serve address", val);
		c->serve = val;
	} else if (!strcmp(a, "--timeout")) {
		if (!parse_num(val, 1, 600000, &v))
			return bad("--timeout (ms, 1..600000)", val);
		o->timeout_ms = (unsigned)v, c->have_timeout = true;
	} else if (!strcmp(a, "--retries")) {
		if (!parse_num(val, 0, 1000000, &v))
			return bad("--retries", val);
		o->retries = (unsigned)v;
	} else if (!strcmp(a, "--load")) {
		if (!parse_num(val, 1, MAX_LOAD, &v))
			return bad("--load (1..10000000)", val);
		o->load = v;
	} else if (!strcmp(a, "--rate")) {
		if (!parse_double(val, 0, 1e7, &o->rate))
			return bad("--rate (requests/s, 0 = unpaced)", val);
		c->have_rate = true;
	} else if (!strcmp(a, "--window")) {
		if (!parse_num(val, 1, MAX_WINDOW, &v))
			return bad("--window (1..4096)", val);
		o->window = (unsigned)v;
	} else if (!strcmp(a, "--cmd")) {
		enum kv_cmd k;

		if (val && !strcmp(val, "mix"))
			o->cmd = KV_LOAD_MIX;
		else if (val && !kv_cmd_parse(val, strlen(val), &k))
			o->cmd = (enum kv_load_cmd)k;
		else
			return bad("--cmd (INCR|SET|GET|mix)", val);
	} else if (!strcmp(a, "--key")) {
		if (!val || !kv_key_valid(val, strlen(val)))
			return bad("--key", val);
		o->key = val;
	} else if (!strcmp(a, "--keys")) {
		if (!parse_num(val, 1, 1000000, &v))
			return bad("--keys (1..1000000)", val);
		o->keys = (unsigned)v;
	} else if (!strcmp(a, "--deadline")) {
		if (!parse_double(val, 0.001, 86400, &o->deadline_s))
			return bad("--deadline (seconds)", val);
	} else if (!strcmp(a, "--log")) {
		if (!val || !*val)
			return bad("--log", val);
		o->log = val;
	} else {
		return 0;
	}
	return -1;
}

/* argv into c. Returns -1 to go on, else the exit status (0 after --help). */
static int parse_args(struct cli *c, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		int rc;

		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			fputs(usage, stdout);
			return 0;
		} else if (!strcmp(a, "--json")) {
			c->o.json = true;
		} else if (!strcmp(a, "--verbose")) {
			c->verbose = true;
		} else if ((rc = value_opt(c, a, val)) != 0) {
			if (rc > 0)
				return rc;
			i++;
		} else if (a[0] == '-' && a[1] == '-') {
			return bad("option", a);
		} else {
			if (c->npos == 4)
				return bad("extra argument", a);
			c->pos[c->npos++] = a;
		}
	}
	return -1;
}

/* --serve: the reference server until SIGINT/SIGTERM. */
static int serve_main(const struct cli *c)
{
	struct kv_server *s;
	char err[300];
	int rc;

	if (c->npos)
		return bad("argument with --serve", c->pos[0]);
	rc = kv_server_open(c->serve, &s, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "doppel-kv: %s\n", err);
		return 2;
	}
	fprintf(stderr, "doppel-kv: serving on %s\n", kv_server_addr(s));
	rc = kv_server_run(s, c->verbose);
	kv_server_close(s);
	if (rc)
		fprintf(stderr, "doppel-kv: server: %s\n", strerror(-rc));
	return rc ? 1 : 0;
}

/* --load N: the load generator. */
static int load_main(struct cli *c)
{
	struct kv_client_opts *o = &c->o;

	if (c->npos != 1)
		return bad("argument with --load", c->pos[1]);
	if (!c->have_rate)
		return bad("--rate (required with --load)", NULL);
	if (!c->have_timeout)
		o->timeout_ms = 100;
	if (o->deadline_s == 0)
		o->deadline_s = (o->rate > 0 ? (double)o->load / o->rate * 2 : 10) + 10;
	return kv_client_load(o);
}

/* HOST CMD KEY [VALUE]: one request. */
static int single_main(struct cli *c)
{
	const char *const *pos = c->pos;
	int npos = c->npos;
	enum kv_cmd k;

	if (npos < 3)
		return bad("request (want HOST[:PORT] CMD KEY [VALUE])", NULL);
	if (kv_cmd_parse(pos[1], strlen(pos[1]), &k))
		return bad("command (SET|GET|INCR)", pos[1]);
	if (!kv_key_valid(pos[2], strlen(pos[2])))
		return bad("key (1..32 of [A-Za-z0-9_.-])", pos[2]);
	if ((k == KV_SET) != (npos == 4))
		return bad(k == KV_SET ? "SET (needs a VALUE)" : "request (VALUE only with SET)",
			   pos[npos - 1]);
	if (npos == 4 && !kv_value_valid(pos[3], strlen(pos[3])))
		return bad("value (1..64 printable, no spaces)", pos[3]);
	if (!c->have_timeout)
		c->o.timeout_ms = 200;
	return kv_client_single(&c->o, k, pos[2], npos == 4 ? pos[3] : NULL);
}

int main(int argc, char **argv)
{
	struct cli c = {.o = {.timeout_ms = 0,
			      .retries = 5,
			      .window = 32,
			      .cmd = KV_LOAD_INCR,
			      .key = "k",
			      .keys = 1}};
	int rc;

	rc = parse_args(&c, argc, argv);
	if (rc >= 0)
		return rc;
	if (c.serve)
		return serve_main(&c);
	if (c.npos < 1) {
		fputs(usage, stderr);
		return 2;
	}
	c.o.target = c.pos[0];
	return c.o.load ? load_main(&c) : single_main(&c);
}
