// SPDX-License-Identifier: GPL-2.0
/*
 * The smallest module the test-suite loads. Reading its parameter calls
 * vmexit_hello_answer(), so a debugger has a module function to break on
 * whenever it likes: cat /sys/module/hello/parameters/answer
 */
#include <linux/init.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/printk.h>

static int answer = 42;

noinline int vmexit_hello_answer(int x)
{
	return x + answer;
}

static int answer_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%d\n", vmexit_hello_answer(0));
}

static const struct kernel_param_ops answer_ops = {
	.set = param_set_int,
	.get = answer_get,
};
module_param_cb(answer, &answer_ops, &answer, 0444);

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
