/*
 * barsize: the PCI BAR sizing handshake, done from user space through the device's
 * config space file /sys/bus/pci/devices/<BDF>/config (root only).
 *
 *   barsize CONFIG [BAR]      (BAR: 0..5, default 0)
 *
 * A BAR's low bits are read-only: writing all ones and reading back gives a mask
 * whose cleared low address bits say how big the region is. The firmware and the
 * kernel do exactly this at boot. Memory decoding is switched off meanwhile (the
 * BAR briefly holds a nonsense address) and everything is restored afterwards.
 * Prints one line of key=value pairs.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PCI_COMMAND 0x04
#define PCI_COMMAND_IO 0x1
#define PCI_COMMAND_MEMORY 0x2
#define PCI_BAR0 0x10

static int fd;
static const char *path;

static uint32_t rd(off_t where, int len)
{
	uint32_t v = 0;

	if (pread(fd, &v, len, where) != len) {
		fprintf(stderr, "barsize: reading %s at 0x%lx: %s\n", path, (long)where,
			strerror(errno));
		exit(1);
	}
	return v;
}

static void wr(off_t where, uint32_t v, int len)
{
	if (pwrite(fd, &v, len, where) != len) {
		fprintf(stderr, "barsize: writing %s at 0x%lx: %s\n", path, (long)where,
			strerror(errno));
		exit(1);
	}
}

int main(int argc, char **argv)
{
	uint32_t cmd, orig, mask, orig_hi = 0, mask_hi = 0;
	uint64_t addr_mask, size;
	int bar = argc > 2 ? atoi(argv[2]) : 0;
	int io, is64;
	off_t reg;

	if (argc < 2 || bar < 0 || bar > 5) {
		fprintf(stderr, "usage: barsize /sys/bus/pci/devices/BDF/config [BAR 0-5]\n");
		return 2;
	}
	path = argv[1];
	fd = open(path, O_RDWR);
	if (fd < 0) {
		fprintf(stderr, "barsize: %s: %s\n", path, strerror(errno));
		return 1;
	}
	reg = PCI_BAR0 + 4 * bar;
	cmd = rd(PCI_COMMAND, 2);
	orig = rd(reg, 4);
	io = orig & 1;
	is64 = !io && ((orig >> 1) & 3) == 2;
	if (is64 && bar == 5) {
		fprintf(stderr, "barsize: BAR5 cannot be the low half of a 64-bit BAR\n");
		return 1;
	}
	/* No decoding while the BAR holds all ones, or the device would appear there. */
	wr(PCI_COMMAND, cmd & ~(PCI_COMMAND_IO | PCI_COMMAND_MEMORY), 2);
	wr(reg, 0xffffffff, 4);
	mask = rd(reg, 4);
	wr(reg, orig, 4);
	if (is64) {
		orig_hi = rd(reg + 4, 4);
		wr(reg + 4, 0xffffffff, 4);
		mask_hi = rd(reg + 4, 4);
		wr(reg + 4, orig_hi, 4);
	}
	wr(PCI_COMMAND, cmd, 2);

	if (mask == 0) {
		printf("bar=%d implemented=no\n", bar);
		return 0;
	}
	addr_mask = ((uint64_t)mask_hi << 32) | (mask & (io ? ~0x3u : ~0xfu));
	if (!is64)
		addr_mask |= 0xffffffff00000000ull;
	if (io)
		addr_mask |= 0xffff0000u;	/* I/O BARs may implement only 16 bits */
	size = ~addr_mask + 1;
	printf("bar=%d original=0x%08x readback=0x%08x type=%s prefetchable=%s size=0x%llx\n",
	       bar, orig, mask, io ? "io" : is64 ? "mem64" : "mem32",
	       !io && (orig & 8) ? "yes" : "no", (unsigned long long)size);
	return 0;
}
