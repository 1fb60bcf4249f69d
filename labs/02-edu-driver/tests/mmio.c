// SPDX-License-Identifier: GPL-2.0
/*
 * mmio - read or write one 32-bit register of a PCI BAR from user space.
 *
 *   mmio RESOURCE OFFSET [VALUE]
 *
 * RESOURCE is a BAR's sysfs file (/sys/bus/pci/devices/<address>/resource0);
 * it is mapped with mmap() and the register at OFFSET is read (printed as
 * 0x%08x) or set to VALUE. The checker uses it to look at the device itself,
 * behind the driver's back: the device's own registers say whether the driver
 * really made it compute, and whether it left it quiet.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	volatile uint32_t *reg;
	unsigned long offset;
	void *map;
	int fd;

	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: mmio RESOURCE OFFSET [VALUE]\n");
		return 1;
	}
	offset = strtoul(argv[2], NULL, 0);
	if (offset % 4 || offset >= 4096) {
		fprintf(stderr, "mmio: offset %s: not a 32-bit register in the first page\n",
			argv[2]);
		return 1;
	}
	fd = open(argv[1], argc == 4 ? O_RDWR : O_RDONLY);
	if (fd < 0) {
		fprintf(stderr, "mmio: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	map = mmap(NULL, 4096, argc == 4 ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED,
		   fd, 0);
	if (map == MAP_FAILED) {
		fprintf(stderr, "mmio: mmap %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	reg = (volatile uint32_t *)((char *)map + offset);
	if (argc == 4)
		*reg = (uint32_t)strtoul(argv[3], NULL, 0);
	else
		printf("0x%08x\n", *reg);
	return 0;
}
