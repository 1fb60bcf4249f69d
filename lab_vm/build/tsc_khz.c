// SPDX-License-Identifier: GPL-2.0
/*
 * Print the host's TSC frequency in kHz: TSC ticks over 200 ms of CLOCK_MONOTONIC_RAW.
 *
 * Under TCG the guest's TSC is the host's, but the guest cannot calibrate it:
 * its PIT loop is too slow under emulation ("Unable to calibrate against PIT"),
 * so it marks the TSC unstable and keeps time with jiffies. Passing this value
 * as tsc_early_khz= gives the guest a real clocksource and skips the delay loop
 * calibration as well.
 */
#include <stdio.h>
#include <time.h>
#include <x86intrin.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(void)
{
	double t0 = now(), t1;
	unsigned long long c0 = __rdtsc(), c1;

	while (now() - t0 < 0.2)
		;
	t1 = now();
	c1 = __rdtsc();
	printf("%.0f\n", (c1 - c0) / (t1 - t0) / 1000.0);
	return 0;
}
