# The smallest guest: stop at once. KVM_EXIT_HLT is the only exit.
	.code16
	.globl _start
_start:
	hlt
