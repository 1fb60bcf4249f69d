# Send a line the way a driver does (Linux's serial8250_console_putchar):
# wait until LSR says THRE, then write the byte to THR.
	.code16
	.globl _start
_start:
	mov	$msg, %si
next:	lodsb
	test	%al, %al
	jz	done
	mov	%al, %bl
	mov	$0x3fd, %dx		# LSR
wait:	in	%dx, %al
	test	$0x20, %al		# THRE
	jz	wait
	mov	$0x3f8, %dx		# THR
	mov	%bl, %al
	out	%al, %dx
	jmp	next
done:	hlt
msg:	.asciz	"polled LSR.THRE before every byte\n"
