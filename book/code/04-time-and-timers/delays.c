// SPDX-License-Identifier: GPL-2.0
/*
 * delays - ask for a short delay COUNT times and print how long each one took.
 *
 *   delays METHOD MICROSECONDS COUNT [-s SLACK_NS] [-f]
 *
 * METHOD is how the delay is made:
 *   nanosleep  nanosleep() for the interval (relative: CLOCK_MONOTONIC)
 *   usleep     usleep(), libc's wrapper around the same
 *   abs        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME) to a deadline
 *   spin       no sleep: clock_gettime() in a loop until the interval has passed
 *
 * -s sets this thread's timer slack (prctl PR_SET_TIMERSLACK): how much later
 * than asked the kernel may wake it, so that it can batch wake-ups.
 * -f runs the program as a SCHED_FIFO real-time task (priority 50), which the
 * kernel never gives slack. Prints one line per delay: the nanoseconds that
 * passed on CLOCK_MONOTONIC from just before the request to just after it.
 */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define WARMUP 5	/* first delays not printed: page faults, cold caches */

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void to_timespec(long long ns, struct timespec *ts)
{
	ts->tv_sec = ns / 1000000000LL;
	ts->tv_nsec = ns % 1000000000LL;
}

/* One delay of @us microseconds by @method; returns the nanoseconds it took. */
static long long delay(const char *method, long us)
{
	long long start = now_ns(), ns = us * 1000LL;
	struct timespec ts;

	if (!strcmp(method, "nanosleep")) {
		to_timespec(ns, &ts);
		nanosleep(&ts, NULL);
	} else if (!strcmp(method, "usleep")) {
		usleep(us);
	} else if (!strcmp(method, "abs")) {
		/* A deadline on the clock, not an interval: what periodic loops use. */
		to_timespec(start + ns, &ts);
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
			;
	} else {
		/* clock_gettime() is a vDSO call here: no system call, no sleep. */
		while (now_ns() - start < ns)
			;
	}
	return now_ns() - start;
}

int main(int argc, char **argv)
{
	const char *methods[] = { "nanosleep", "usleep", "abs", "spin" };
	long us, count, i;
	int opt, known = 0;

	while ((opt = getopt(argc, argv, "s:f")) != -1) {
		if (opt == 's') {
			if (prctl(PR_SET_TIMERSLACK, atol(optarg), 0, 0, 0)) {
				perror("delays: PR_SET_TIMERSLACK");
				return 1;
			}
		} else if (opt == 'f') {
			struct sched_param sp = { .sched_priority = 50 };

			if (sched_setscheduler(0, SCHED_FIFO, &sp)) {
				perror("delays: SCHED_FIFO");
				return 1;
			}
		} else {
			return 2;
		}
	}
	for (i = 0; i < 4 && optind < argc; i++)
		known |= !strcmp(argv[optind], methods[i]);
	if (argc - optind != 3 || !known) {
		fprintf(stderr, "usage: delays nanosleep|usleep|abs|spin MICROSECONDS COUNT "
			"[-s SLACK_NS] [-f]\n");
		return 2;
	}
	us = atol(argv[optind + 1]);
	count = atol(argv[optind + 2]);
	for (i = 0; i < WARMUP; i++)
		delay(argv[optind], us);
	for (i = 0; i < count; i++)
		printf("%lld\n", delay(argv[optind], us));
	return 0;
}
