// SPDX-License-Identifier: GPL-2.0
/*
 * vmexit-agent: runs host commands inside the lab VM.
 *
 * It talks to the host over one byte stream (a virtio-serial port), kept apart
 * from the kernel console so that kernel messages never mix with command
 * output. Requests and replies are framed, so output is binary-safe.
 *
 *   host -> guest  "VMXQ" u32 id, u32 type, u32 cmd_len, u32 in_len, cmd, stdin
 *   guest -> host  "VMXA" u32 id, u32 type, u32 len, data
 *
 * REQ_RESUMED comes after the host restored a saved guest: it carries the
 * host's wall clock and fresh randomness, so that a restored guest neither
 * believes it is still the moment it was saved nor repeats its random numbers,
 * and optionally a file system to mount (the host's share).
 *
 * On a UART (--paced, used when QEMU records the run for replay) the guest
 * answers every read with REP_CREDIT: under record/replay QEMU queues the
 * host's bytes as events and delivers them without looking at the 16-byte
 * receive FIFO, so a host that sent more than the FIFO holds before the agent
 * read it would lose bytes. The host keeps at most 16 bytes unacknowledged.
 *
 * Several commands may run at once (a debugger may stop the guest while one
 * runs); each runs as "sh -c CMD" in its own session so it can be killed as a
 * group. Integers are little-endian (x86).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/random.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

enum { REQ_RUN = 1, REQ_KILL = 2, REQ_PING = 3, REQ_RESUMED = 4 };
enum { REP_STDOUT = 1, REP_STDERR = 2, REP_EXIT = 3, REP_PONG = 4,
       REP_READY = 5, REP_ERROR = 6, REP_CREDIT = 7 };

#define MAX_JOBS 16
#define MAX_REQUEST (16u << 20)

struct job {
	uint32_t id;
	pid_t pid;		/* 0 once reaped */
	int out, err;		/* -1 once closed */
	int status;
};

static int chan = -1;
static int paced;		/* acknowledge every read: see REP_CREDIT above */
static struct job jobs[MAX_JOBS];
static int sigpipe[2];

static void write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			if (errno == EAGAIN) {
				struct pollfd pfd = { .fd = fd, .events = POLLOUT };

				poll(&pfd, 1, 100);
				continue;
			}
			perror("vmexit-agent: write to host");
			exit(1);
		}
		p += n;
		len -= n;
	}
}

static void reply(uint32_t id, uint32_t type, const void *data, uint32_t len)
{
	uint32_t hdr[4];

	memcpy(hdr, "VMXA", 4);
	hdr[1] = id;
	hdr[2] = type;
	hdr[3] = len;
	write_all(chan, hdr, sizeof(hdr));
	if (len)
		write_all(chan, data, len);
}

static void on_sigchld(int sig)
{
	int saved = errno;

	(void)sig;
	if (write(sigpipe[1], "c", 1) < 0) {
		/* the pipe is full: a wake-up is already pending */
	}
	errno = saved;
}

static void start_job(uint32_t id, const char *cmd, const char *in, uint32_t in_len)
{
	int out[2], err[2], slot;
	int infd;
	pid_t pid;

	for (slot = 0; slot < MAX_JOBS; slot++)
		if (!jobs[slot].pid && jobs[slot].out < 0 && jobs[slot].err < 0)
			break;
	if (slot == MAX_JOBS) {
		reply(id, REP_ERROR, "too many commands at once", 25);
		return;
	}
	/*
	 * stdin comes from a memory file: nothing to keep fed while the command
	 * runs, and no open() of our own that a breakpoint on the open path of
	 * the command under study would catch first.
	 */
	infd = memfd_create("vmexit-stdin", MFD_CLOEXEC);
	if (infd < 0 || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) {
		reply(id, REP_ERROR, "cannot set up pipes", 19);
		return;
	}
	write_all(infd, in, in_len);
	lseek(infd, 0, SEEK_SET);

	pid = fork();
	if (pid == 0) {
		setsid();
		dup2(infd, 0);
		dup2(out[1], 1);
		dup2(err[1], 2);
		signal(SIGCHLD, SIG_DFL);
		signal(SIGPIPE, SIG_DFL);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	close(infd);
	close(out[1]);
	close(err[1]);
	if (pid < 0) {
		close(out[0]);
		close(err[0]);
		reply(id, REP_ERROR, "fork failed", 11);
		return;
	}
	fcntl(out[0], F_SETFL, O_NONBLOCK);
	fcntl(err[0], F_SETFL, O_NONBLOCK);
	jobs[slot] = (struct job){ .id = id, .pid = pid, .out = out[0], .err = err[0] };
}

/* Forward what a pipe holds now; close it at end of file. */
static void drain(struct job *j, int *fd, uint32_t type)
{
	static char buf[65536];

	while (*fd >= 0) {
		ssize_t n = read(*fd, buf, sizeof(buf));

		if (n > 0) {
			reply(j->id, type, buf, n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0 || errno != EAGAIN) {
			close(*fd);
			*fd = -1;
		}
		return;
	}
}

static void finish_if_done(struct job *j)
{
	int32_t status;

	if (j->pid || j->id == 0)
		return;
	/*
	 * The shell is gone. A background child may still hold the pipes open;
	 * send what is there now and report the exit instead of waiting forever.
	 */
	drain(j, &j->out, REP_STDOUT);
	drain(j, &j->err, REP_STDERR);
	if (j->out >= 0)
		close(j->out);
	if (j->err >= 0)
		close(j->err);
	j->out = j->err = -1;
	status = WIFEXITED(j->status) ? WEXITSTATUS(j->status)
				       : 128 + WTERMSIG(j->status);
	reply(j->id, REP_EXIT, &status, sizeof(status));
	j->id = 0;
}

static void reap(void)
{
	int status, i;
	pid_t pid;

	/* As PID 1 the agent also reaps orphans that are not its jobs. */
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (i = 0; i < MAX_JOBS; i++) {
			if (jobs[i].pid == pid) {
				jobs[i].pid = 0;
				jobs[i].status = status;
			}
		}
	}
}

/*
 * cmd, if not empty: "SOURCE\0TARGET\0FSTYPE\0OPTIONS" of a file system to mount once the
 * clock is right (the host's share). Mounting here saves the host a command round trip and
 * a shell after every restore.
 */
static int mount_request(const char *cmd, uint32_t cmd_len)
{
	const char *field[4];
	uint32_t at = 0;
	int i;

	for (i = 0; i < 4; i++) {
		if (at >= cmd_len)
			return -1;
		field[i] = cmd + at;
		at += strnlen(cmd + at, cmd_len - at) + 1;
	}
	return mount(field[0], field[1], field[2], 0, field[3]);
}

/* payload: s64 seconds, s64 nanoseconds (CLOCK_REALTIME), then random bytes */
static void resumed(uint32_t id, const char *cmd, uint32_t cmd_len,
		    const char *data, uint32_t len)
{
	struct {
		struct rand_pool_info info;
		char bytes[256];
	} seed;
	struct timespec now;
	int64_t t[2];
	int fd;

	if (len < sizeof(t) || len - sizeof(t) > sizeof(seed.bytes)) {
		reply(id, REP_ERROR, "bad resume payload", 18);
		return;
	}
	memcpy(t, data, sizeof(t));
	now.tv_sec = t[0];
	now.tv_nsec = t[1];
	if (clock_settime(CLOCK_REALTIME, &now)) {
		reply(id, REP_ERROR, "clock_settime failed", 20);
		return;
	}
	seed.info.buf_size = len - sizeof(t);
	seed.info.entropy_count = seed.info.buf_size * 8;
	memcpy(seed.bytes, data + sizeof(t), seed.info.buf_size);
	fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
	/* credit the host's bytes, then make the CRNG use them now, not at its next reseed */
	if (fd < 0 || ioctl(fd, RNDADDENTROPY, &seed) || ioctl(fd, RNDRESEEDCRNG)) {
		if (fd >= 0)
			close(fd);
		reply(id, REP_ERROR, "reseeding the random pool failed", 32);
		return;
	}
	close(fd);
	if (cmd_len && mount_request(cmd, cmd_len)) {
		char msg[128];
		int n = snprintf(msg, sizeof(msg), "mount failed: %s", strerror(errno));

		reply(id, REP_ERROR, msg, n);
		return;
	}
	reply(id, REP_PONG, "", 0);
}

static void handle_request(uint32_t id, uint32_t type, char *cmd, uint32_t cmd_len,
			   char *in, uint32_t in_len)
{
	int i;

	switch (type) {
	case REQ_RUN:
		cmd[cmd_len] = '\0';	/* the buffer has room: see main() */
		start_job(id, cmd, in, in_len);
		break;
	case REQ_KILL:
		for (i = 0; i < MAX_JOBS; i++)
			if (jobs[i].id == id && jobs[i].pid)
				kill(-jobs[i].pid, SIGKILL);
		break;
	case REQ_PING:
		reply(id, REP_PONG, cmd, cmd_len);
		break;
	case REQ_RESUMED:
		resumed(id, cmd, cmd_len, in, in_len);
		break;
	default:
		reply(id, REP_ERROR, "unknown request", 15);
	}
}

static int open_channel(const char *path)
{
	struct termios tio;
	int fd, tries;

	/* virtio-serial ports appear asynchronously after boot: wait for ours */
	for (tries = 0; tries < 5000; tries++) {
		fd = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);
		if (fd >= 0)
			break;
		usleep(2000);
	}
	if (fd < 0) {
		perror(path);
		exit(1);
	}
	if (isatty(fd) && tcgetattr(fd, &tio) == 0) {
		cfmakeraw(&tio);
		tcsetattr(fd, TCSANOW, &tio);
	}
	return fd;
}

int main(int argc, char **argv)
{
	static char buf[MAX_REQUEST + 64];
	size_t have = 0;
	struct sigaction sa = { .sa_handler = on_sigchld, .sa_flags = SA_RESTART };
	int i;

	if (argc > 1 && !strcmp(argv[1], "--paced")) {
		paced = 1;
		argv++;
		argc--;
	}
	if (argc < 2) {
		fprintf(stderr, "usage: %s [--paced] CHANNEL-DEVICE [READY-MESSAGE]\n",
			argv[0]);
		return 2;
	}
	for (i = 0; i < MAX_JOBS; i++)
		jobs[i].out = jobs[i].err = -1;
	if (pipe2(sigpipe, O_CLOEXEC | O_NONBLOCK))
		return 1;
	sigaction(SIGCHLD, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	setenv("PATH", "/sbin:/bin:/usr/sbin:/usr/bin", 1);
	setenv("HOME", "/root", 1);
	setenv("TERM", "dumb", 1);
	if (chdir("/root"))
		chdir("/");

	chan = open_channel(argv[1]);
	reply(0, REP_READY, argc > 2 ? argv[2] : "", argc > 2 ? strlen(argv[2]) : 0);

	for (;;) {
		struct pollfd pfd[2 + 2 * MAX_JOBS];
		struct job *owner[2 + 2 * MAX_JOBS];
		int n = 0;

		pfd[n++] = (struct pollfd){ .fd = chan, .events = POLLIN };
		pfd[n++] = (struct pollfd){ .fd = sigpipe[0], .events = POLLIN };
		for (i = 0; i < MAX_JOBS; i++) {
			if (jobs[i].out >= 0) {
				owner[n] = &jobs[i];
				pfd[n++] = (struct pollfd){ .fd = jobs[i].out, .events = POLLIN };
			}
			if (jobs[i].err >= 0) {
				owner[n] = &jobs[i];
				pfd[n++] = (struct pollfd){ .fd = jobs[i].err, .events = POLLIN };
			}
		}
		if (poll(pfd, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("poll");
			return 1;
		}
		if (pfd[1].revents) {
			char c[64];

			while (read(sigpipe[0], c, sizeof(c)) > 0)
				;
			reap();
		}
		for (i = 2; i < n; i++) {
			struct job *j = owner[i];

			if (!pfd[i].revents)
				continue;
			if (pfd[i].fd == j->out)
				drain(j, &j->out, REP_STDOUT);
			else if (pfd[i].fd == j->err)
				drain(j, &j->err, REP_STDERR);
		}
		for (i = 0; i < MAX_JOBS; i++)
			finish_if_done(&jobs[i]);

		if (pfd[0].revents & POLLIN) {
			ssize_t got = read(chan, buf + have, sizeof(buf) - 64 - have);

			if (got < 0 && errno != EINTR && errno != EAGAIN) {
				perror("read from host");
				return 1;
			}
			/* got == 0: the host is not connected (between two sessions) */
			if (got <= 0) {
				usleep(10000);
				continue;
			}
			have += got;
			if (paced) {
				uint32_t n = got;

				reply(0, REP_CREDIT, &n, sizeof(n));
			}
		} else if (pfd[0].revents & (POLLHUP | POLLERR)) {
			usleep(10000);
		}
		/* run every complete request in the buffer */
		for (;;) {
			uint32_t hdr[5], need;

			if (have < sizeof(hdr))
				break;
			memcpy(hdr, buf, sizeof(hdr));
			if (memcmp(hdr, "VMXQ", 4) || hdr[3] > MAX_REQUEST ||
			    hdr[4] > MAX_REQUEST - hdr[3]) {
				/* lost framing: drop one byte and look for the next magic */
				memmove(buf, buf + 1, --have);
				continue;
			}
			need = sizeof(hdr) + hdr[3] + hdr[4];
			if (have < need)
				break;
			{
				/* copy out: the command string gets a terminating NUL */
				static char req[MAX_REQUEST + 64];

				memcpy(req, buf + sizeof(hdr), hdr[3] + hdr[4]);
				memmove(req + hdr[3] + 1, req + hdr[3], hdr[4]);
				handle_request(hdr[1], hdr[2], req, hdr[3],
					       req + hdr[3] + 1, hdr[4]);
			}
			memmove(buf, buf + need, have - need);
			have -= need;
		}
	}
}
