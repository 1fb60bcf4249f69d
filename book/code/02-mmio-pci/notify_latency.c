// SPDX-License-Identifier: GPL-2.0
/*
 * notify_latency - how long a factorial takes to reach user space, two ways.
 *
 *   notify_latency poll ATTR N COUNT        through the driver: write N to the sysfs
 *                                           attribute ATTR, sleep in poll() until
 *                                           sysfs_notify() wakes us, read the result
 *   notify_latency spin RESOURCE0 N COUNT   without waiting for an interrupt: write N
 *                                           to edu's factorial register through the
 *                                           mapped BAR, read the status register until
 *                                           "computing" clears (a driver that enabled
 *                                           edu's interrupt still gets one, afterwards)
 *
 * Prints one line per run: the microseconds from just before the write that starts
 * the computation to the moment the program knows it has ended (CLOCK_MONOTONIC).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void die(const char *what)
{
	fprintf(stderr, "notify_latency: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void reread(int fd, char *buf, size_t size)
{
	ssize_t n;

	if (lseek(fd, 0, SEEK_SET) < 0 || (n = read(fd, buf, size - 1)) < 0)
		die("read");
	buf[n] = '\0';
}

static int by_poll(const char *attr, const char *n, int count)
{
	char buf[64];
	int fd = open(attr, O_RDONLY), wfd = open(attr, O_WRONLY);

	if (fd < 0 || wfd < 0)
		die(attr);
	reread(fd, buf, sizeof(buf));		/* arm: sysfs reports changes after a read */
	for (int i = 0; i < count; i++) {
		struct pollfd pfd = { .fd = fd, .events = POLLPRI | POLLERR };
		double t0 = now_us();
		int ret;

		if (write(wfd, n, strlen(n)) < 0)
			die("write");
		ret = poll(&pfd, 1, 5000);
		if (ret <= 0) {
			fprintf(stderr, "notify_latency: no notification in 5 s\n");
			return 2;
		}
		printf("%.1f\n", now_us() - t0);
		reread(fd, buf, sizeof(buf));	/* the result, and re-arm */
	}
	return 0;
}

static int by_spinning(const char *resource0, const char *n, int count)
{
	int fd = open(resource0, O_RDWR | O_SYNC);
	volatile uint32_t *regs;

	if (fd < 0)
		die(resource0);
	regs = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (regs == MAP_FAILED)
		die("mmap");
	for (int i = 0; i < count; i++) {
		double t0 = now_us();

		regs[0x08 / 4] = strtoul(n, NULL, 0);
		while (regs[0x20 / 4] & 1)
			;
		printf("%.1f\n", now_us() - t0);
		usleep(1000);		/* let the driver take the interrupt edu raises anyway */
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 5 || (strcmp(argv[1], "poll") && strcmp(argv[1], "spin"))) {
		fprintf(stderr, "usage: notify_latency poll|spin FILE N COUNT\n");
		return 1;
	}
	setvbuf(stdout, NULL, _IOFBF, 1 << 16);
	if (!strcmp(argv[1], "poll"))
		return by_poll(argv[2], argv[3], atoi(argv[4]));
	return by_spinning(argv[2], argv[3], atoi(argv[4]));
}
