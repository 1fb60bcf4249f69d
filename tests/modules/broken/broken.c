// SPDX-License-Identifier: GPL-2.0
/* Does not compile on purpose: the test-suite checks the error is reported readably. */
#include <linux/module.h>

static int __init broken_init(void)
{
	return undeclared_variable;
}
module_init(broken_init);
MODULE_LICENSE("GPL");
