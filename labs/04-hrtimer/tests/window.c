// SPDX-License-Identifier: GPL-2.0
/*
 * window - run the timer for a while and say exactly when it was started and stopped.
 *
 *   window DIR MILLISECONDS
 *
 * Writes 1 to DIR/running, sleeps MILLISECONDS, writes 0 to DIR/running, and
 * prints "t0 t1 t2 t3": CLOCK_MONOTONIC nanoseconds just before and just after
 * the write that started the timer (t0, t1) and the one that stopped it (t2, t3).
 * The module started its timer somewhere in [t0, t1] and stopped it in [t2, t3],
 * however long the writes took: the checker's tolerances are these windows.
 * Exit status 1 (and a message) if a write fails.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Write @value to @path; returns 0 or the errno of the failure. */
static int put(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY), err = 0;

	if (fd < 0)
		return errno;
	if (write(fd, value, strlen(value)) < 0)
		err = errno;
	close(fd);
	return err;
}

int main(int argc, char **argv)
{
	char path[4096];
	long long t[4], ms;
	struct timespec nap;
	int err;

	if (argc != 3) {
		fprintf(stderr, "usage: window DIR MILLISECONDS\n");
		return 2;
	}
	snprintf(path, sizeof(path), "%s/running", argv[1]);
	ms = atoll(argv[2]);
	nap.tv_sec = ms / 1000;
	nap.tv_nsec = ms % 1000 * 1000000;

	t[0] = now_ns();
	err = put(path, "1\n");
	t[1] = now_ns();
	if (err) {
		printf("writing 1 to %s failed: %s\n", path, strerror(err));
		return 1;
	}
	nanosleep(&nap, NULL);
	t[2] = now_ns();
	err = put(path, "0\n");
	t[3] = now_ns();
	if (err) {
		printf("writing 0 to %s failed: %s\n", path, strerror(err));
		return 1;
	}
	printf("%lld %lld %lld %lld\n", t[0], t[1], t[2], t[3]);
	return 0;
}
