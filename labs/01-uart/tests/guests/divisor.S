# Program 9600 baud (divisor 12) as Linux's 8250 driver does: set LCR.DLAB, write
# DLL and DLM, clear DLAB. With DLAB set, offsets 0 and 1 are the divisor latch,
# so the 0x0c written to offset 0 must not be sent. Results: bx = divisor read
# back, cl = LCR with DLAB, ch = LCR after; then 'A' goes out through THR.
	.code16
	.globl _start
_start:
	mov	$0x3fb, %dx		# LCR
	mov	$0x83, %al		# DLAB | 8 data bits
	out	%al, %dx
	in	%dx, %al
	mov	%al, %cl
	mov	$0x3f8, %dx		# DLL
	mov	$0x0c, %al
	out	%al, %dx
	mov	$0x3f9, %dx		# DLM
	mov	$0x00, %al
	out	%al, %dx
	in	%dx, %al
	mov	%al, %bh
	mov	$0x3f8, %dx
	in	%dx, %al
	mov	%al, %bl
	mov	$0x3fb, %dx		# LCR: DLAB off, 8N1
	mov	$0x03, %al
	out	%al, %dx
	in	%dx, %al
	mov	%al, %ch
	mov	$0x3f8, %dx		# THR again
	mov	$'A', %al
	out	%al, %dx
	hlt
