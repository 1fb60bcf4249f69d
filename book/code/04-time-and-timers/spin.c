// SPDX-License-Identifier: GPL-2.0
/*
 * spin - busy-wait until a tick counter reaches a target, three ways.
 *
 * A timer (here SIGALRM every millisecond, as the timer interrupt does for the
 * kernel's jiffies) increments a counter behind the program's back. main()
 * waits for 100 more ticks. Built with one of:
 *
 *   -DWAIT=0  a plain variable: the compiler may assume nothing else changes it
 *             while the loop runs, so it loads it once, before the loop
 *   -DWAIT=1  volatile sig_atomic_t, what the C standard asks of an object that a
 *             signal handler writes: every use is a load from memory
 *   -DWAIT=2  a plain variable read through READ_ONCE(), as the kernel does
 *
 * sig_atomic_t (an int here) is the type the standard promises is read and written
 * in one piece even when a signal arrives in the middle; volatile is what makes the
 * compiler do each read and write at all.
 *
 * Compile with -O2 and compare the disassembly of wait_until().
 */
#include <signal.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

#ifndef WAIT
#define WAIT 0
#endif

#if WAIT == 1
static volatile sig_atomic_t ticks;
#else
static sig_atomic_t ticks;
#endif

/* The kernel's READ_ONCE() for a scalar: a volatile access of just this one read. */
#if WAIT == 2
#define READ(x) (*(const volatile typeof(x) *)&(x))
#else
#define READ(x) (x)
#endif

static void tick(int sig)
{
	ticks++;
}

/* noinline: one function to disassemble, whatever main() does around it. */
__attribute__((noinline)) void wait_until(sig_atomic_t target)
{
	while (READ(ticks) < target)
		;
}

int main(void)
{
	struct itimerval every_ms = { { 0, 1000 }, { 0, 1000 } };
	struct timespec t0, t1;

	signal(SIGALRM, tick);
	setitimer(ITIMER_REAL, &every_ms, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	wait_until(READ(ticks) + 100);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("100 ticks passed in %.1f ms\n",
	       (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
	return 0;
}
