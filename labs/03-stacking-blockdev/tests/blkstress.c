// SPDX-License-Identifier: GPL-2.0
/*
 * blkstress - write data to a block device, read it back and check it, from
 * several threads at once, and count what comes back wrong.
 *
 *   blkstress stress DEV [options]  writers and readers at once, then a summary
 *   blkstress fill DEV [options]    write the pattern once (-b bytes at -o)
 *   blkstress check DEV [options]   read once (-b bytes at -o) and check the pattern
 *
 * Options (sizes in bytes are multiples of 512):
 *   -w N  writer threads (stress, default 2). Each owns -S slots of -b bytes:
 *         it writes a slot, checks that its own buffer did not change, reads
 *         the slot back and checks it; -n times, each time new data.
 *   -r N  reader threads (stress, default 2): read and check -S slots written
 *         before the threads start, -n times each.
 *   -n N  iterations per thread (default 100)
 *   -b N  bytes per I/O (default 4096)
 *   -o N  the first sector used (default 0)
 *   -m N  bytes between a page boundary and the start of each buffer (default 0)
 *   -S N  slots per thread (default 4)
 *   -s N  the pattern's seed (default 1)
 *   -k K  (fill, check) the data as xform stores it with key K, not plain
 *
 * Every I/O is O_DIRECT: it goes to the device as it is, not through the page
 * cache, so concurrent threads give the driver concurrent bios. Each 512-byte
 * sector of the pattern depends on the seed, the sector number on the device
 * and a generation: data in the wrong place, stale or garbled does not match.
 *
 * Prints key=value pairs; exits 0 if all was right, 1 if some data was wrong,
 * 2 on an I/O error or bad usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SECTOR 512
#define PAGE 4096
#define MAX_THREADS 64
#define MAX_REPORTS 5		/* mismatches described on stderr */

static int fd;
static long bytes = 4096, iterations = 100, slots = 4, misalign;
static long long first_sector;
static uint64_t seed = 1;
static int writers = 2, readers = 2;

static long writes, reads, bad_reads, bad_sectors, changed_buffers, io_errors;
static int reports;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t mix(uint64_t x)		/* splitmix64's finaliser */
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* The pattern's 32-bit word @i of device sector @sector, generation @gen. */
static uint32_t pattern(long long sector, uint64_t gen, int i)
{
	return (uint32_t)mix(seed ^ mix((uint64_t)sector ^ mix(gen)) ^ (uint64_t)i);
}

/* xform's keystream (solution/xform.c): the word at byte @pos of the disk. */
static uint32_t keystream(uint64_t pos, uint32_t key)
{
	return (uint32_t)((((pos >> 2) ^ key) * 0x9e3779b97f4a7c15ULL) >> 32);
}

/* The pattern for @len bytes from device sector @sector: plain, or as xform stores it. */
static void fill(uint32_t *buf, long long sector, long len, uint64_t gen, int keyed,
		 uint32_t key)
{
	for (long s = 0; s < len / SECTOR; s++)
		for (int i = 0; i < SECTOR / 4; i++)
			buf[s * SECTOR / 4 + i] = pattern(sector + s, gen, i) ^
				(keyed ? keystream((uint64_t)(sector + s) * SECTOR + 4 * i, key) : 0);
}

static void report(const char *what, long long sector, uint32_t want, uint32_t got)
{
	pthread_mutex_lock(&lock);
	if (reports++ < MAX_REPORTS)
		fprintf(stderr, "%s: sector %lld: want %08x, got %08x\n", what, sector, want, got);
	pthread_mutex_unlock(&lock);
}

/* The number of sectors of @buf that are not the pattern (transformed with @key if @keyed). */
static long compare(const uint32_t *buf, long long sector, long len, uint64_t gen,
		    int keyed, uint32_t key, const char *what)
{
	long bad = 0;

	for (long s = 0; s < len / SECTOR; s++) {
		for (int i = 0; i < SECTOR / 4; i++) {
			uint64_t pos = (uint64_t)(sector + s) * SECTOR + 4 * i;
			uint32_t want = pattern(sector + s, gen, i);

			if (keyed)
				want ^= keystream(pos, key);
			if (buf[s * SECTOR / 4 + i] != want) {
				report(what, sector + s, want, buf[s * SECTOR / 4 + i]);
				bad++;
				break;
			}
		}
	}
	return bad;
}

static void *buffer(void)
{
	char *p;

	if (posix_memalign((void **)&p, PAGE, bytes + misalign + PAGE)) {
		perror("posix_memalign");
		exit(2);
	}
	return p + misalign;
}

static int do_io(int write, void *buf, long long sector)
{
	off_t off = (off_t)sector * SECTOR;
	ssize_t n = write ? pwrite(fd, buf, bytes, off) : pread(fd, buf, bytes, off);

	if (n == bytes)
		return 0;
	pthread_mutex_lock(&lock);
	io_errors++;
	if (reports++ < MAX_REPORTS)
		fprintf(stderr, "%s of %ld bytes at sector %lld: %s\n", write ? "write" : "read",
			bytes, sector, n < 0 ? strerror(errno) : "short");
	pthread_mutex_unlock(&lock);
	return -1;
}

static long long slot_sector(int thread, long slot)
{
	return first_sector + (thread * slots + slot) * (bytes / SECTOR);
}

/* Readers' slots come after every writer's. */
#define READ_AREA writers

static void tally(long w, long r, long br, long bs, long cb)
{
	pthread_mutex_lock(&lock);
	writes += w;
	reads += r;
	bad_reads += br;
	bad_sectors += bs;
	changed_buffers += cb;
	pthread_mutex_unlock(&lock);
}

static void *writer(void *arg)
{
	int me = (int)(long)arg;
	uint32_t *out = buffer(), *in = buffer();
	long w = 0, r = 0, br = 0, bs = 0, cb = 0;

	for (long it = 0; it < iterations; it++) {
		long long sector = slot_sector(me, it % slots);
		uint64_t gen = ((uint64_t)me << 32) | (uint64_t)(it + 1);
		long bad;

		fill(out, sector, bytes, gen, 0, 0);
		if (do_io(1, out, sector))
			break;
		w++;
		/* The driver must not change the caller's data on its way down. */
		cb += compare(out, sector, bytes, gen, 0, 0, "write buffer changed") != 0;
		memset(in, 0, bytes);
		if (do_io(0, in, sector))
			break;
		r++;
		bad = compare(in, sector, bytes, gen, 0, 0, "read back");
		br += bad != 0;
		bs += bad;
	}
	tally(w, r, br, bs, cb);
	return NULL;
}

static void *reader(void *arg)
{
	int me = (int)(long)arg;
	uint32_t *in = buffer();
	long r = 0, br = 0, bs = 0;

	for (long it = 0; it < iterations; it++) {
		long long sector = slot_sector(READ_AREA, (it + me) % slots);
		long bad;

		if (do_io(0, in, sector))
			break;
		r++;
		bad = compare(in, sector, bytes, 0, 0, 0, "read");
		br += bad != 0;
		bs += bad;
	}
	tally(0, r, br, bs, 0);
	return NULL;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int stress(void)
{
	pthread_t threads[2 * MAX_THREADS];
	uint32_t *buf = buffer();
	int n = 0;
	double start;

	/* The readers' data, written (and checked) before anybody runs. */
	for (long slot = 0; slot < slots; slot++) {
		long long sector = slot_sector(READ_AREA, slot);

		fill(buf, sector, bytes, 0, 0, 0);
		if (do_io(1, buf, sector))
			return 2;
	}
	start = now();
	for (int i = 0; i < writers + readers; i++) {
		if (pthread_create(&threads[n], NULL, i < writers ? writer : reader,
				   (void *)(long)(i < writers ? i : i - writers))) {
			fprintf(stderr, "pthread_create failed\n");
			exit(2);
		}
		n++;
	}
	while (n)
		pthread_join(threads[--n], NULL);
	printf("writes=%ld reads=%ld bad_reads=%ld bad_sectors=%ld changed_buffers=%ld "
	       "io_errors=%ld seconds=%.3f\n", writes, reads, bad_reads, bad_sectors,
	       changed_buffers, io_errors, now() - start);
	return io_errors ? 2 : bad_sectors || changed_buffers ? 1 : 0;
}

static int once(int write, int keyed, uint32_t key)
{
	uint32_t *buf = buffer();
	long bad;

	if (write) {
		fill(buf, first_sector, bytes, 0, keyed, key);
		if (do_io(1, buf, first_sector))
			return 2;
		bad = compare(buf, first_sector, bytes, 0, keyed, key, "write buffer changed");
		printf("wrote=%ld changed_buffers=%ld\n", bytes, bad ? 1L : 0L);
		return bad ? 1 : 0;
	}
	memset(buf, 0, bytes);
	if (do_io(0, buf, first_sector))
		return 2;
	bad = compare(buf, first_sector, bytes, 0, keyed, key, "check");
	printf("read=%ld bad_sectors=%ld\n", bytes, bad);
	return bad ? 1 : 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: blkstress stress|fill|check DEVICE [-w N] [-r N] [-n N] [-b BYTES] "
		"[-o SECTOR] [-m BYTES] [-S N] [-s SEED] [-k KEY]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int keyed = 0, opt;
	uint32_t key = 0;
	const char *mode;

	if (argc < 3)
		usage();
	mode = argv[1];
	optind = 3;
	while ((opt = getopt(argc, argv, "w:r:n:b:o:m:S:s:k:")) != -1) {
		switch (opt) {
		case 'w': writers = atoi(optarg); break;
		case 'r': readers = atoi(optarg); break;
		case 'n': iterations = atol(optarg); break;
		case 'b': bytes = atol(optarg); break;
		case 'o': first_sector = atoll(optarg); break;
		case 'm': misalign = atol(optarg); break;
		case 'S': slots = atol(optarg); break;
		case 's': seed = strtoull(optarg, NULL, 0); break;
		case 'k': keyed = 1; key = (uint32_t)strtoul(optarg, NULL, 0); break;
		default: usage();
		}
	}
	if (bytes <= 0 || bytes % SECTOR || misalign < 0 || misalign % SECTOR ||
	    misalign >= PAGE || slots < 1 || writers < 0 || readers < 0 ||
	    writers > MAX_THREADS || readers > MAX_THREADS || first_sector < 0)
		usage();
	fd = open(argv[2], (strcmp(mode, "check") ? O_RDWR : O_RDONLY) | O_DIRECT);
	if (fd < 0) {
		fprintf(stderr, "open %s: %s\n", argv[2], strerror(errno));
		return 2;
	}
	if (!strcmp(mode, "stress"))
		return stress();
	if (!strcmp(mode, "fill"))
		return once(1, keyed, key);
	if (!strcmp(mode, "check"))
		return once(0, keyed, key);
	usage();
	return 2;
}
