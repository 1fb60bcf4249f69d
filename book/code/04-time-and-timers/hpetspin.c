// SPDX-License-Identifier: GPL-2.0
/*
 * hpetspin - wait by spinning on a hardware timer register from user space.
 *
 *   hpetspin [US [COUNT]]   COUNT delays (default 1) of US microseconds (default 100),
 *                           each timed on CLOCK_MONOTONIC: one line per delay, in ns
 *
 * The register is the HPET's main counter: a device register that counts up by
 * itself, mapped into the process from /dev/mem with mmap(), and read through an
 * ordinary pointer, as one would read a board's free-running timer. Built with one of:
 *
 *   -DWAIT=0  a plain pointer: the compiler may read *timer once and reuse the value
 *   -DWAIT=1  a pointer to volatile: every *timer is a load from the device
 *   -DWAIT=2  a plain pointer read through READ_ONCE(), as the kernel does
 *   -DWAIT=3  a plain pointer, with a 1 ns nanosleep() in the loop: a call the
 *             compiler cannot see into, which might change *timer, so it reloads
 *
 * Compile with -O2 and compare the disassembly of hpet_wait().
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define HPET_BASE	0xfed00000UL	/* where the PC's HPET sits in physical memory */
#define HPET_PERIOD	0x004		/* the counter's period, in femtoseconds */
#define HPET_CONF	0x010		/* bit 0: the main counter runs */
#define HPET_COUNTER	0x0f0		/* the main counter; its low 32 bits are enough here */

#ifndef WAIT
#define WAIT 0
#endif

#if WAIT == 1
typedef volatile uint32_t reg32;
#else
typedef uint32_t reg32;
#endif

#if WAIT == 2
#define READ(x) (*(const volatile typeof(x) *)&(x))
#else
#define READ(x) (x)
#endif

/* Wait until the counter has moved @ticks past its value on entry. */
__attribute__((noinline)) void hpet_wait(const reg32 *timer, uint32_t ticks)
{
	uint32_t prev = READ(*timer), t;

	do {
#if WAIT == 3
		struct timespec one_ns = { 0, 1 };

		nanosleep(&one_ns, NULL);
#endif
		t = READ(*timer);
	} while (t - prev < ticks);
}

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	long us = argc > 1 ? atol(argv[1]) : 100, count = argc > 2 ? atol(argv[2]) : 1, i;
	volatile uint32_t *conf;
	uint32_t period_fs, ticks;
	uint8_t *hpet;
	int fd;

	fd = open("/dev/mem", O_RDWR | O_SYNC);
	if (fd < 0) {
		perror("hpetspin: /dev/mem");
		return 1;
	}
	hpet = mmap(NULL, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED, fd, HPET_BASE);
	if (hpet == MAP_FAILED) {
		perror("hpetspin: mmap");
		return 1;
	}
	period_fs = *(volatile uint32_t *)(hpet + HPET_PERIOD);
	if (!period_fs || period_fs > 100000000) {	/* the spec's limit: 100 ns */
		fprintf(stderr, "hpetspin: no HPET at %#lx (period %u fs)\n", HPET_BASE,
			period_fs);
		return 1;
	}
	/* A kernel that does not use the HPET (booted without ACPI) never started it. */
	conf = (volatile uint32_t *)(hpet + HPET_CONF);
	if (!(*conf & 1)) {
		*conf |= 1;
		fprintf(stderr, "hpetspin: started the HPET's counter\n");
	}
	ticks = us * 1000000000ULL / period_fs;
	fprintf(stderr, "hpetspin: period %u fs, %u ticks for %ld us\n", period_fs, ticks, us);
	for (i = 0; i < count; i++) {
		long long start = now_ns();

		hpet_wait((const reg32 *)(hpet + HPET_COUNTER), ticks);
		printf("%lld\n", now_ns() - start);
	}
	return 0;
}
