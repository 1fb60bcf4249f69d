# Send a line through THR without looking at the line status first
# (a guest may: THRE says the register is empty, and this UART sends at once).
	.code16
	.globl _start
_start:
	mov	$0x3f8, %dx		# COM1: THR at offset 0
	mov	$msg, %si
next:	lodsb				# al = *si++
	test	%al, %al
	jz	done
	out	%al, %dx		# KVM_EXIT_IO, out, 1 byte, port 0x3f8
	jmp	next
done:	hlt
msg:	.asciz	"Hello from the guest!\r\n"
