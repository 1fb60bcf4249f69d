# Read every byte that arrives (while LSR says DR, take RBR) and send it back
# with bit 5 flipped (letters change case). cx counts the bytes.
	.code16
	.globl _start
_start:
	xor	%cx, %cx
poll:	mov	$0x3fd, %dx		# LSR
	in	%dx, %al
	test	$0x01, %al		# DR: a byte is waiting in RBR
	jz	done
	mov	$0x3f8, %dx		# RBR (read) / THR (write): the same port
	in	%dx, %al
	xor	$0x20, %al
	out	%al, %dx
	inc	%cx
	jmp	poll
done:	hlt
