// SPDX-License-Identifier: GPL-2.0
/*
 * sysfs_wait - wait for sysfs_notify() on a sysfs attribute with poll() or select().
 *
 *   sysfs_wait MODE ATTR PLAN
 *
 * MODE is how to wait:
 *   poll            poll() for POLLPRI|POLLERR, then re-arm (lseek + read)
 *   select          select() with the file in exceptfds, then re-arm
 *   poll-norearm    poll() as above, but never read again after a wake-up
 *   select-readfds  select() with the file in readfds (the mistake: always ready)
 *
 * PLAN is one letter per round: 's' starts a computation first (writes 10 to ATTR
 * through a second descriptor), 'i' waits idle, with nothing started. Each wait
 * times out after TIMEOUT_MS. One line per round:
 *
 *   round PLAN-LETTER woke|timeout MILLISECONDS VALUE-READ-OR-"-"
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_MS 1000

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void die(const char *what)
{
	fprintf(stderr, "sysfs_wait: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* Read the attribute from its start: the value, and it re-arms the notification. */
static void rearm(int fd, char *buf, size_t size)
{
	ssize_t n;

	if (lseek(fd, 0, SEEK_SET) < 0)
		die("lseek");
	n = read(fd, buf, size - 1);
	if (n < 0)
		die("read");
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
}

/* Sleep until the attribute changes (or TIMEOUT_MS pass); 1 if woken, 0 on timeout. */
static int wait_poll(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLPRI | POLLERR };
	int ret = poll(&pfd, 1, TIMEOUT_MS);

	if (ret < 0)
		die("poll");
	return ret;
}

static int wait_select(int fd, int in_readfds)
{
	struct timeval tv = { .tv_sec = TIMEOUT_MS / 1000,
			      .tv_usec = TIMEOUT_MS % 1000 * 1000 };
	fd_set fds;
	int ret;

	FD_ZERO(&fds);
	FD_SET(fd, &fds);
	/* sysfs_notify() shows as an "exceptional condition" (POLLPRI) */
	if (in_readfds)
		ret = select(fd + 1, &fds, NULL, NULL, &tv);
	else
		ret = select(fd + 1, NULL, NULL, &fds, &tv);
	if (ret < 0)
		die("select");
	return ret;
}

int main(int argc, char **argv)
{
	const char *mode, *plan;
	char buf[64];
	int fd, wfd;

	if (argc != 4) {
		fprintf(stderr, "usage: sysfs_wait poll|select|poll-norearm|select-readfds ATTR PLAN\n");
		return 2;
	}
	mode = argv[1];
	plan = argv[3];
	fd = open(argv[2], O_RDONLY);
	wfd = open(argv[2], O_WRONLY);
	if (fd < 0 || wfd < 0)
		die(argv[2]);
	rearm(fd, buf, sizeof(buf));		/* arm: a sysfs file notifies after a read */
	for (const char *step = plan; *step; step++) {
		double t0;
		int woke;

		if (*step == 's' && write(wfd, "10", 2) != 2)
			die("write");
		t0 = now_ms();
		if (!strcmp(mode, "poll") || !strcmp(mode, "poll-norearm"))
			woke = wait_poll(fd);
		else
			woke = wait_select(fd, !strcmp(mode, "select-readfds"));
		printf("round %c %s %.1f ", *step, woke ? "woke" : "timeout", now_ms() - t0);
		if (woke && strcmp(mode, "poll-norearm")) {
			rearm(fd, buf, sizeof(buf));	/* the result, and re-arm */
			printf("%s\n", buf);
		} else {
			printf("-\n");
		}
		fflush(stdout);
	}
	return 0;
}
