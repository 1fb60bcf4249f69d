// SPDX-License-Identifier: GPL-2.0
/*
 * kdelay.c - time the kernel's own ways of waiting, from inside the kernel.
 *
 *   echo "METHOD MICROSECONDS COUNT" > /sys/kernel/debug/kdelay/run
 *   cat /sys/kernel/debug/kdelay/run
 *
 * The write returns once COUNT delays are done; reading gives one line per
 * delay: the nanoseconds it took on ktime_get(). METHOD is one of
 *
 *   udelay        busy-wait: the CPU runs nothing else meanwhile
 *   usleep_range  sleep on an hrtimer that expires exactly at the end (no slack)
 *   usleep_slack  usleep_range(us, 2 * us): the kernel may wake us anywhere in
 *                 that window, so that it can serve other timers with one interrupt
 *   hrtimer       a one-shot hrtimer, timed in its callback (hard interrupt
 *                 context), before any thread is woken
 *   msleep        msleep(): the timer wheel, which counts in jiffies (HZ)
 */
#include <linux/completion.h>
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/hrtimer.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/seq_file.h>
#include <linux/slab.h>

#define MAX_COUNT	10000
#define MAX_US		10000

static struct dentry *dir;
static DEFINE_MUTEX(lock);		/* one run at a time; guards samples */
static u64 *samples;
static unsigned int nsamples;

static struct hrtimer timer;
static ktime_t fired;
static DECLARE_COMPLETION(done);

static enum hrtimer_restart kdelay_fire(struct hrtimer *t)
{
	fired = ktime_get();
	complete(&done);
	return HRTIMER_NORESTART;
}

static u64 one_hrtimer(unsigned int us)
{
	ktime_t start = ktime_get();

	reinit_completion(&done);
	hrtimer_start(&timer, ns_to_ktime(us * NSEC_PER_USEC), HRTIMER_MODE_REL_HARD);
	wait_for_completion(&done);
	return ktime_to_ns(ktime_sub(fired, start));
}

/* One delay; returns its length in ns, or 0 for an unknown method. */
static u64 one_delay(const char *method, unsigned int us)
{
	ktime_t start = ktime_get();

	if (!strcmp(method, "udelay"))
		udelay(us);
	else if (!strcmp(method, "usleep_range"))
		usleep_range(us, us);
	else if (!strcmp(method, "usleep_slack"))
		usleep_range(us, 2 * us);
	else if (!strcmp(method, "msleep"))
		msleep(DIV_ROUND_UP(us, 1000));
	else if (!strcmp(method, "hrtimer"))
		return one_hrtimer(us);
	else
		return 0;
	return ktime_to_ns(ktime_sub(ktime_get(), start));
}

static ssize_t run_write(struct file *file, const char __user *ubuf, size_t len,
			 loff_t *ppos)
{
	char buf[64], method[16];
	unsigned int us, count, i;

	if (len >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, len))
		return -EFAULT;
	buf[len] = '\0';
	if (sscanf(buf, "%15s %u %u", method, &us, &count) != 3 || !us || us > MAX_US ||
	    !count || count > MAX_COUNT)
		return -EINVAL;

	mutex_lock(&lock);
	nsamples = 0;
	for (i = 0; i < count; i++) {
		u64 ns = one_delay(method, us);

		if (!ns) {
			mutex_unlock(&lock);
			return -EINVAL;
		}
		samples[nsamples++] = ns;
		/* udelay() never sleeps: give the CPU back between delays (PREEMPT_NONE). */
		cond_resched();
	}
	mutex_unlock(&lock);
	return len;
}

static int run_show(struct seq_file *m, void *v)
{
	unsigned int i;

	mutex_lock(&lock);
	for (i = 0; i < nsamples; i++)
		seq_printf(m, "%llu\n", samples[i]);
	mutex_unlock(&lock);
	return 0;
}

static int run_open(struct inode *inode, struct file *file)
{
	/* Room for every line at once: a seq_file retries with a bigger buffer otherwise. */
	return single_open_size(file, run_show, NULL, MAX_COUNT * 12);
}

static const struct file_operations run_fops = {
	.owner = THIS_MODULE,
	.open = run_open,
	.read = seq_read,
	.write = run_write,
	.llseek = seq_lseek,
	.release = single_release,
};

static int __init kdelay_init(void)
{
	samples = kvmalloc_array(MAX_COUNT, sizeof(*samples), GFP_KERNEL);
	if (!samples)
		return -ENOMEM;
	hrtimer_init(&timer, CLOCK_MONOTONIC, HRTIMER_MODE_REL_HARD);
	timer.function = kdelay_fire;
	dir = debugfs_create_dir("kdelay", NULL);
	debugfs_create_file("run", 0600, dir, NULL, &run_fops);
	return 0;
}

static void __exit kdelay_exit(void)
{
	/* No more writers first, then no timer: nothing can restart it after the cancel. */
	debugfs_remove_recursive(dir);
	hrtimer_cancel(&timer);
	kvfree(samples);
}

module_init(kdelay_init);
module_exit(kdelay_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Times udelay, usleep_range, msleep and an hrtimer from inside the kernel");
