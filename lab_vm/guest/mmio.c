/*
 * mmio: read and write 32-bit registers of a PCI device's BAR from user space,
 * through the sysfs file /sys/bus/pci/devices/<BDF>/resourceN (no /dev/mem needed).
 *
 *   mmio RESOURCE r OFFSET            read the register at OFFSET
 *   mmio RESOURCE w OFFSET VALUE      write VALUE to it
 *   mmio RESOURCE p OFFSET MASK       poll: read until (value & MASK) == 0, print the count
 *
 * Several operations may follow one another on one command line; each prints one
 * line "op offset value" (hex). The file's size is the BAR's size: an offset past
 * it (or not 4-byte aligned) is an error message and exit status 2, never a fault.
 *
 * A device answers at its BAR only while memory decoding is on (bit 1 of its PCI
 * command register). Drivers switch it on (pci_enable_device); with no driver,
 * `echo 1 > /sys/bus/pci/devices/<BDF>/enable` does. mmio warns when it is off,
 * because the reads then return whatever the bus returns for "nobody here".
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define POLL_LIMIT 10000000UL

static int usage(void)
{
	fprintf(stderr, "usage: mmio RESOURCE {r OFFSET | w OFFSET VALUE | p OFFSET MASK}...\n");
	return 2;
}

/* Warn if the device does not decode its memory BARs; resource path → its config file. */
static void check_decoding(const char *resource)
{
	char config[4096];
	const char *slash = strrchr(resource, '/');
	uint16_t cmd;
	int fd;

	if (!slash || snprintf(config, sizeof(config), "%.*s/config",
			       (int)(slash - resource), resource) >= (int)sizeof(config))
		return;
	fd = open(config, O_RDONLY);
	if (fd < 0)
		return;
	if (pread(fd, &cmd, 2, 4) == 2 && !(cmd & 2))
		fprintf(stderr, "mmio: warning: memory decoding is off for this device (PCI command "
			"register 0x%04x): it does not answer at its BAR; enable it with "
			"echo 1 > %.*s/enable\n", cmd, (int)(slash - resource), resource);
	close(fd);
}

static int parse(const char *text, unsigned long *out)
{
	char *end;

	errno = 0;
	*out = strtoul(text, &end, 0);
	return errno || *end || end == text ? -1 : 0;
}

int main(int argc, char **argv)
{
	struct stat st;
	volatile uint32_t *bar;
	unsigned long off, val, n;
	int fd, i;

	if (argc < 4)
		return usage();
	fd = open(argv[1], O_RDWR | O_SYNC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "mmio: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	/* Check every offset before mapping: a bad one must not leave half the work done. */
	for (i = 2; i < argc; i++) {
		int args = argv[i][0] == 'r' ? 1 : 2;

		if (strlen(argv[i]) != 1 || !strchr("rwp", argv[i][0]) || i + args >= argc ||
		    parse(argv[i + 1], &off) || (args == 2 && parse(argv[i + 2], &val)))
			return usage();
		if (off % 4) {
			fprintf(stderr, "mmio: offset 0x%lx is not 4-byte aligned\n", off);
			return 2;
		}
		if (st.st_size < 4 || off > (unsigned long)st.st_size - 4) {
			fprintf(stderr, "mmio: offset 0x%lx is past the end of %s "
				"(the BAR is 0x%lx bytes: the kernel maps nothing beyond it)\n",
				off, argv[1], (unsigned long)st.st_size);
			return 2;
		}
		i += args;
	}
	check_decoding(argv[1]);
	bar = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (bar == MAP_FAILED) {
		fprintf(stderr, "mmio: mmap %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	for (i = 2; i < argc; i++) {
		parse(argv[i + 1], &off);
		switch (argv[i][0]) {
		case 'r':
			printf("read 0x%03lx 0x%08x\n", off, bar[off / 4]);
			i += 1;
			break;
		case 'w':
			parse(argv[i + 2], &val);
			bar[off / 4] = (uint32_t)val;
			printf("write 0x%03lx 0x%08lx\n", off, val);
			i += 2;
			break;
		case 'p':
			parse(argv[i + 2], &val);
			for (n = 1; n < POLL_LIMIT && (bar[off / 4] & val); n++)
				;
			printf("poll 0x%03lx reads=%lu\n", off, n);
			i += 2;
			break;
		}
	}
	return 0;
}
