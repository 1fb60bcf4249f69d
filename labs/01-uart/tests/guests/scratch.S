# The scratch register (offset 7) and IER (offset 1) keep what was written.
# Results: bl, bh = SCR after writing 0xa5, then 0x5a; cl = IER after writing 0x0f.
	.code16
	.globl _start
_start:
	mov	$0x3ff, %dx		# SCR
	mov	$0xa5, %al
	out	%al, %dx
	in	%dx, %al
	mov	%al, %bl
	mov	$0x5a, %al
	out	%al, %dx
	in	%dx, %al
	mov	%al, %bh
	mov	$0x3f9, %dx		# IER
	mov	$0x0f, %al
	out	%al, %dx
	in	%dx, %al
	mov	%al, %cl
	hlt
