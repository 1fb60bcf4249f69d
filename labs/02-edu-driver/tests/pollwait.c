// SPDX-License-Identifier: GPL-2.0
/*
 * pollwait - wait for a sysfs attribute to be notified, as user space would.
 *
 *   pollwait FILE TIMEOUT_MS [VALUE]
 *
 * Opens FILE and reads it (a sysfs file reports a change only to a reader that
 * has read it since it last woke), writes VALUE to FILE through a second
 * descriptor if given (so the change cannot come before we wait), then waits in
 * poll() for POLLPRI|POLLERR, which sysfs_notify() raises. Prints
 * "woke after N ms: CONTENTS" (exit 0) or "timeout after N ms" (exit 2).
 * The busybox shell cannot poll(); the checker copies this into the guest.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int read_all(int fd, char *buf, size_t size)
{
	ssize_t n;

	if (lseek(fd, 0, SEEK_SET) < 0)
		return -1;
	n = read(fd, buf, size - 1);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

int main(int argc, char **argv)
{
	char buf[4096];
	struct pollfd pfd;
	long start, waited;
	int fd, ret;

	if (argc < 3 || argc > 4) {
		fprintf(stderr, "usage: pollwait FILE TIMEOUT_MS [VALUE]\n");
		return 1;
	}
	fd = open(argv[1], O_RDONLY);
	if (fd < 0 || read_all(fd, buf, sizeof(buf)) < 0) {
		fprintf(stderr, "pollwait: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	start = now_ms();
	if (argc == 4) {
		int wfd = open(argv[1], O_WRONLY);

		if (wfd < 0 || write(wfd, argv[3], strlen(argv[3])) < 0) {
			fprintf(stderr, "pollwait: writing %s to %s: %s\n", argv[3], argv[1],
				strerror(errno));
			return 1;
		}
		close(wfd);
	}
	pfd.fd = fd;
	pfd.events = POLLPRI | POLLERR;
	ret = poll(&pfd, 1, atoi(argv[2]));
	waited = now_ms() - start;
	if (ret < 0) {
		fprintf(stderr, "pollwait: poll: %s\n", strerror(errno));
		return 1;
	}
	if (ret == 0) {
		printf("timeout after %ld ms\n", waited);
		return 2;
	}
	if (read_all(fd, buf, sizeof(buf)) < 0) {
		fprintf(stderr, "pollwait: reading %s again: %s\n", argv[1], strerror(errno));
		return 1;
	}
	printf("woke after %ld ms: %s\n", waited, buf);
	return 0;
}
