// SPDX-License-Identifier: GPL-2.0
/*
 * clocks - read the kernel's clocks from user space.
 *
 *   clocks [-n LINES] [-i MILLISECONDS]   LINES lines (default 1), each one reading
 *                                         of realtime monotonic boottime raw tai, in ns
 *   clocks -c CALLS                       read CLOCK_MONOTONIC CALLS times in a row:
 *                                         cost per call and the smallest step seen
 *
 * CLOCK_REALTIME is the kernel's ktime_get_real(): wall-clock time, which
 * settimeofday()/date -s may move. CLOCK_MONOTONIC is ktime_get(): it only
 * ever moves forward, at the rate the clocksource gives (NTP may trim it).
 * CLOCK_MONOTONIC_RAW is the same without NTP's trimming. CLOCK_BOOTTIME
 * also counts suspend; CLOCK_TAI is realtime plus the leap seconds.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long long ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* How much a clock read costs, and how finely the clock moves. */
static void cost(long calls)
{
	long long first = ns(CLOCK_MONOTONIC), last = first, step = 0, t;
	long i, distinct = 0;

	for (i = 0; i < calls; i++) {
		t = ns(CLOCK_MONOTONIC);
		if (t != last) {
			distinct++;
			if (!step || t - last < step)
				step = t - last;
		}
		last = t;
	}
	printf("calls=%ld ns_per_call=%.1f min_step_ns=%lld distinct=%ld\n",
	       calls, (double)(last - first) / calls, step, distinct);
}

int main(int argc, char **argv)
{
	long lines = 1, interval_ms = 100, i;
	int opt;

	while ((opt = getopt(argc, argv, "n:i:c:")) != -1) {
		switch (opt) {
		case 'n':
			lines = atol(optarg);
			break;
		case 'i':
			interval_ms = atol(optarg);
			break;
		case 'c':
			cost(atol(optarg));
			return 0;
		default:
			fprintf(stderr, "usage: clocks [-n LINES] [-i MS] | -c CALLS\n");
			return 2;
		}
	}
	for (i = 0; i < lines; i++) {
		if (i)
			usleep(interval_ms * 1000);
		printf("%lld %lld %lld %lld %lld\n", ns(CLOCK_REALTIME), ns(CLOCK_MONOTONIC),
		       ns(CLOCK_BOOTTIME), ns(CLOCK_MONOTONIC_RAW), ns(CLOCK_TAI));
		fflush(stdout);
	}
	return 0;
}
