/* pjlog: pjlib's log lines into a bounded lock-free ring that Python drains.
 *
 * pjlib calls its log function on whatever thread logs, often with locks held (a mixer room,
 * a stream's jitter buffer, a dialog). Handing such a line to Python there would make that
 * thread wait for the GIL while it holds the lock. So the log function only copies the line
 * into a fixed ring (multi-producer, never blocking: a full ring drops the line and counts it)
 * and a Python task moves the lines to `logging` from its own thread.
 */
#ifndef SIPCONF_PJLOG_H
#define SIPCONF_PJLOG_H

#include <stdint.h>

#define PJLOG_SLOTS 1024          /* lines the ring holds (a power of two) */
#define PJLOG_TEXT_MAX 4080       /* bytes of a line kept (pjlib's own limit is 4000) */

/* Set pjlib's level and decor and make the ring pjlib's log function. Call it before
 * libCreate, and again after libInit (pjsua installs its own log function there). */
void pjlog_install(int level, unsigned decor);
/* The oldest pending line: its text into buf (up to cap bytes, not terminated) and its level
 * into *level. Returns its length, -1 when the ring is empty, -2 when another thread is
 * draining (one consumer at a time; this never waits for it). */
int pjlog_pop(int *level, char *buf, int cap);
/* Lines dropped because the ring was full, since the start. */
uint64_t pjlog_dropped(void);

#endif
