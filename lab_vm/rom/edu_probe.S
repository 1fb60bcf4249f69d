/*
 * edu_probe.S - a 64 KiB -bios ROM for QEMU's pc machine that drives the edu PCI device.
 *
 * No firmware runs before it, so nobody has given edu an address: the ROM does what a BIOS
 * and a driver would. In 16-bit real mode, straight from the reset vector, it finds edu on
 * PCI bus 0 through the legacy configuration ports 0xCF8/0xCFC, puts BAR 0 at EDU_BAR and
 * switches on memory decoding. Then it enters 32-bit protected mode (flat segments, no
 * paging) to reach EDU_BAR above 1 MiB, and reads and writes edu's registers
 * (QEMU's docs/specs/edu.txt). It reports on isa-debugcon (port 0xE9) as one line of
 * key=hex pairs, prints "done", and halts with interrupts off, for good.
 *
 * Under KVM every `in`/`out` is a KVM_EXIT_IO and every edu access a KVM_EXIT_MMIO; nothing
 * else in this program leaves the guest (the GDT is pre-marked "accessed", so the CPU never
 * writes to the ROM; the stack is in RAM).
 *
 * Assembled with GNU as, linked at ROM_BASE, flattened with objcopy (lab_vm/romguest.py).
 */
	.set ROM_BASE,   0xF0000	/* QEMU maps a 64 KiB BIOS here (and at 4 GiB - 64 KiB) */
	.set EDU_BAR,    0xE0000000	/* in the PCI hole of a pc machine with little RAM */
	.set EDU_ID,     0x11E81234	/* device 11e8, vendor 1234: the PCI config dword 0 */
	.set PCI_ADDR,   0xCF8		/* CONFIG_ADDRESS: 1<<31 | bus<<16 | dev<<11 | fn<<8 | reg */
	.set PCI_DATA,   0xCFC		/* CONFIG_DATA: the dword CONFIG_ADDRESS selects */
	.set DEBUGCON,   0xE9		/* isa-debugcon: each byte written goes to a file */
	.set STACK_TOP,  0x7000		/* conventional RAM */
	.set FACT_ARG,   5

	.text
	.code16
rom_start:

/* --- 16-bit real mode: CS = 0xF000 (base ROM_BASE) after the reset vector's far jump ---- */
start16:
	cli
	cld
	mov	%cs, %ax
	mov	%ax, %ds		/* DS = the ROM too: data offsets are label - rom_start */

	/* Scan bus 0, function 0 of each device, for edu: two port exits per device. */
	mov	$0x80000000, %ebx
1:	mov	%ebx, %eax
	mov	$PCI_ADDR, %dx
	out	%eax, %dx
	mov	$PCI_DATA, %dx
	in	%dx, %eax
	cmp	$EDU_ID, %eax
	je	found
	add	$0x800, %ebx		/* next device number */
	cmp	$0x80010000, %ebx	/* past device 31 */
	jne	1b
	mov	$(no_edu - rom_start), %si
2:	lodsb				/* tell, then stop */
	test	%al, %al
	jz	halt16
	out	%al, $DEBUGCON
	jmp	2b
halt16:	hlt
	jmp	halt16

found:	/* BAR 0 (config offset 0x10) = EDU_BAR: a 32-bit, non-prefetchable memory BAR. */
	mov	%ebx, %eax
	or	$0x10, %eax
	mov	$PCI_ADDR, %dx
	out	%eax, %dx
	mov	$EDU_BAR, %eax
	mov	$PCI_DATA, %dx
	out	%eax, %dx
	/* Command register (offset 4), bit 1: respond to memory accesses (memory decoding). */
	mov	%ebx, %eax
	or	$0x04, %eax
	mov	$PCI_ADDR, %dx
	out	%eax, %dx
	mov	$0x0002, %ax
	mov	$PCI_DATA, %dx
	out	%ax, %dx		/* 16 bits: the status register above it is left alone */

	/* Into 32-bit protected mode: load the GDT, set CR0.PE, far-jump to a 32-bit segment. */
	lgdtl	(gdt_desc - rom_start)
	mov	%cr0, %eax
	or	$1, %eax
	mov	%eax, %cr0
	ljmpl	$0x08, $start32

/* --- 32-bit protected mode, flat: linear = physical ----------------------------------- */
	.code32
start32:
	mov	$0x10, %ax
	mov	%ax, %ds
	mov	%ax, %es
	mov	%ax, %ss
	mov	$STACK_TOP, %esp

	mov	$s_ident, %esi
	call	puts
	mov	EDU_BAR + 0x00, %eax	/* identification: 0x010000ed (version 1.0, "ed") */
	call	puthex

	mov	$s_live, %esi
	call	puts
	movl	$0x12345678, EDU_BAR + 0x04	/* liveness check: edu stores the inverse */
	mov	EDU_BAR + 0x04, %eax
	call	puthex

	movl	$FACT_ARG, EDU_BAR + 0x08	/* factorial: edu's own thread computes it */
	xor	%ecx, %ecx
3:	inc	%ecx			/* polls of the status register */
	mov	EDU_BAR + 0x20, %eax
	test	$0x01, %eax		/* bit 0: still computing */
	jnz	3b
	push	%ecx
	mov	$s_fact, %esi
	call	puts
	mov	EDU_BAR + 0x08, %eax
	call	puthex
	mov	$s_polls, %esi
	call	puts
	pop	%eax
	call	puthex

	mov	$s_done, %esi
	call	puts
halt32:	cli				/* nothing can wake the vCPU now */
	hlt
	jmp	halt32

/* puts: write the NUL-terminated string at %esi to the debug console. */
puts:	lodsb
	test	%al, %al
	jz	1f
	out	%al, $DEBUGCON
	jmp	puts
1:	ret

/* puthex: write %eax as 8 hex digits. */
puthex:	mov	%eax, %ebx
	mov	$8, %ecx
1:	rol	$4, %ebx
	mov	%bl, %al
	and	$0x0F, %al
	add	$'0', %al
	cmp	$'9', %al
	jbe	2f
	add	$('a' - '0' - 10), %al
2:	out	%al, $DEBUGCON
	loop	1b
	ret

s_ident:	.asciz	"ident="
s_live:		.asciz	" liveness="
s_fact:		.asciz	" factorial="
s_polls:	.asciz	" polls="
s_done:		.asciz	"\ndone\n"
no_edu:		.asciz	"no edu device on bus 0\n"

/* Flat 4 GiB code (0x08) and data (0x10) segments. Types 0x9B/0x93 have the "accessed" bit
 * set already: the CPU would otherwise write it into the descriptor - into the ROM. */
	.balign	8
gdt:	.quad	0
	.quad	0x00CF9B000000FFFF
	.quad	0x00CF93000000FFFF
gdt_end:
gdt_desc:
	.word	gdt_end - gdt - 1
	.long	gdt

/* --- the reset vector: the CPU starts at CS base 0xFFFF0000, IP 0xFFF0 ------------------- */
	.org	0xFFF0
	.code16
	.globl	reset
reset:	ljmp	$(ROM_BASE >> 4), $(start16 - rom_start)
	.org	0x10000
