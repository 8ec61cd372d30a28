/* log_journal.c — one log message into the systemd journal (kept apart from log.c: <syslog.h> names clash). */
#include <systemd/sd-journal.h>

void log_journal_send(int prio, const char *comp, const char *vm, const char *msg);

/* MESSAGE ("COMPONENT VM: TEXT"), PRIORITY, SYSLOG_IDENTIFIER=doppel, DOPPEL_COMPONENT, DOPPEL_VM. An
 * error (no journald) is dropped: there is nowhere to report a failing log. */
void log_journal_send(int prio, const char *comp, const char *vm, const char *msg)
{
	sd_journal_send("MESSAGE=%s%s%s: %s", comp ? comp : "-", vm ? " " : "", vm ? vm : "", msg,
			"PRIORITY=%d", prio, "SYSLOG_IDENTIFIER=doppel", "DOPPEL_COMPONENT=%s",
			comp ? comp : "", "DOPPEL_VM=%s", vm ? vm : "", NULL);
}
