// SPDX-License-Identifier: GPL-2.0
/* The smallest module the test-suite loads: it says hello and has a function to break on. */
#include <linux/init.h>
#include <linux/module.h>
#include <linux/printk.h>

static int answer = 42;
module_param(answer, int, 0444);

noinline int vmexit_hello_answer(int x)
{
	return x + answer;
}
EXPORT_SYMBOL_GPL(vmexit_hello_answer);

static int __init hello_init(void)
{
	pr_info("vmexit hello: loaded, answer=%d\n", vmexit_hello_answer(0));
	return 0;
}

static void __exit hello_exit(void)
{
	pr_info("vmexit hello: unloaded\n");
}

module_init(hello_init);
module_exit(hello_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmexit test-suite module");
