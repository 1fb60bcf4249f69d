// SPDX-License-Identifier: GPL-2.0
/*
 * hrlate.c - a periodic hrtimer that measures how late it runs.
 *
 * Every period_us microseconds, on a fixed grid (start + period, start +
 * 2 * period, ...), the timer's callback runs in hard interrupt context and
 * records its lateness: how long after the expiry it was programmed for it
 * actually ran. The statistics are files in /sys/kernel/debug/hrlate/:
 *
 *   period_us  rw  the period, 50..1000000 us (default 1000); -EBUSY while running
 *   running    rw  1 clears the statistics and starts the timer, 0 stops it
 *   count      r   callbacks run since the last start
 *   missed     r   expiries skipped because a callback ran a whole period late
 *   min_ns, max_ns, mean_ns   r   lateness of those callbacks (0 before the first)
 *   histogram  r   one line per bucket: "<from_us> <callbacks>", bucket 0 below
 *                  1 us, bucket i from 2^(i-1) us, the last one open-ended
 */
#include <linux/debugfs.h>
#include <linux/hrtimer.h>
#include <linux/ktime.h>
#include <linux/log2.h>
#include <linux/math64.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/seq_file.h>
#include <linux/spinlock.h>

#define PERIOD_MIN_US		50
#define PERIOD_MAX_US		1000000
#define PERIOD_DEFAULT_US	1000
#define HIST_BUCKETS		16

enum hrlate_stat { STAT_COUNT, STAT_MISSED, STAT_MIN, STAT_MAX, STAT_MEAN };

struct hrlate_stats {
	u64 count;			/* callbacks run */
	u64 missed;			/* expiries skipped */
	u64 min_ns, max_ns, sum_ns;	/* lateness */
	u64 hist[HIST_BUCKETS];
};

static struct hrtimer timer;
static ktime_t period;			/* the timer's period; changed only while stopped */
static bool running;
static struct hrlate_stats stats;
/* The callback runs in hard interrupt context: elsewhere, take it with interrupts off. */
static DEFINE_SPINLOCK(stats_lock);
/* Serializes start, stop and period changes (writers of the control files). */
static DEFINE_MUTEX(control);
static struct dentry *dir;

/* Add one callback's lateness to the statistics. Called with stats_lock held. */
static void hrlate_record(u64 late_ns)
{
	/* TODO 5: count it; min, max, sum; its histogram bucket (fls64 of whole us) */
}

/* Hard interrupt context: no sleeping, no mutex. */
static enum hrtimer_restart hrlate_fire(struct hrtimer *t)
{
	/* TODO 4: record the lateness, forward on the grid */
	return HRTIMER_NORESTART;
}

static int hrlate_start(void)
{
	/* TODO 3: -EBUSY if running; clear stats; start the timer */
	return -EOPNOTSUPP;
}

static void hrlate_stop(void)
{
	/* TODO 6: stop the timer; waits for a callback that is running */
}

static int running_get(void *data, u64 *val)
{
	*val = READ_ONCE(running);
	return 0;
}

static int running_set(void *data, u64 val)
{
	int ret = 0;

	if (val > 1)
		return -EINVAL;
	mutex_lock(&control);
	if (val)
		ret = hrlate_start();
	else
		hrlate_stop();
	mutex_unlock(&control);
	return ret;
}
DEFINE_DEBUGFS_ATTRIBUTE(running_fops, running_get, running_set, "%llu\n");

static int period_get(void *data, u64 *val)
{
	*val = ktime_to_us(period);
	return 0;
}

static int period_set(void *data, u64 val)
{
	/* TODO 2: 50..1000000 us or -EINVAL; -EBUSY while running */
	return -EOPNOTSUPP;
}
DEFINE_DEBUGFS_ATTRIBUTE(period_fops, period_get, period_set, "%llu\n");

/* One statistic; which one is the file's private data (an enum hrlate_stat). */
static int stat_get(void *data, u64 *val)
{
	/* TODO 7: the statistic asked for, under stats_lock */
	*val = 0;
	return 0;
}
DEFINE_DEBUGFS_ATTRIBUTE(stat_fops, stat_get, NULL, "%llu\n");

static int histogram_show(struct seq_file *m, void *v)
{
	/* TODO 8: copy the buckets under the lock, print "<from_us> <count>" lines */
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(histogram);

static void hrlate_files(void)
{
	static const char *const names[] = {
		[STAT_COUNT] = "count", [STAT_MISSED] = "missed", [STAT_MIN] = "min_ns",
		[STAT_MAX] = "max_ns", [STAT_MEAN] = "mean_ns",
	};
	uintptr_t i;

	dir = debugfs_create_dir("hrlate", NULL);
	debugfs_create_file_unsafe("period_us", 0644, dir, NULL, &period_fops);
	debugfs_create_file_unsafe("running", 0644, dir, NULL, &running_fops);
	for (i = 0; i < ARRAY_SIZE(names); i++)
		debugfs_create_file_unsafe(names[i], 0444, dir, (void *)i, &stat_fops);
	debugfs_create_file("histogram", 0444, dir, NULL, &histogram_fops);
}

static int __init hrlate_init(void)
{
	period = ns_to_ktime(PERIOD_DEFAULT_US * NSEC_PER_USEC);
	/* TODO 1: set up the timer: CLOCK_MONOTONIC, relative, hard irq; its callback */
	hrlate_files();
	return 0;
}

static void __exit hrlate_exit(void)
{
	/* First the files, so that nobody can start the timer again... */
	debugfs_remove_recursive(dir);
	/* TODO 9: ...then make sure the timer is stopped: its callback is in this module */
}

module_init(hrlate_init);
module_exit(hrlate_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("A periodic hrtimer that measures its own lateness");
