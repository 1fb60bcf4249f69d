# Nothing answers at COM2 (0x2f8) or at guest-physical 0x9000 (no RAM, no device):
# reads there return all ones. Writes there go nowhere; the guest runs on.
# Results: bl = a byte from 0x2f8, si = a word from 0x2f8, di = a word read at 0x9000.
	.code16
	.globl _start
_start:
	mov	$0x80, %al		# the POST code port: nobody listens here either
	out	%al, $0x80
	mov	$0x2f8, %dx
	out	%al, %dx
	in	%dx, %al
	mov	%al, %bl
	in	%dx, %ax
	mov	%ax, %si
	mov	0x9000, %di		# KVM_EXIT_MMIO, a 2-byte read
	hlt
