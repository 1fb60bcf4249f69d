// SPDX-License-Identifier: GPL-2.0
/*
 * ktimes.c - the ways a driver reads the time, what each returns and what it costs.
 *
 *   cat /sys/kernel/debug/ktimes/table
 *
 * calls each accessor many times in a row and prints one line per accessor:
 *
 *   NAME VALUE STEP_NS PS_PER_CALL
 *
 * VALUE is the last reading (ns, or jiffies for the two jiffies rows); STEP_NS the
 * smallest change seen between two consecutive readings (0: no change seen);
 * PS_PER_CALL the cost of one call, loop included, in picoseconds. A last line
 * gives HZ, the tick rate this kernel (and so this module) was built with.
 *
 *   cat /sys/kernel/debug/ktimes/pair
 *
 * reads the clocksource's counter (the TSC) and ktime_get_ns() back to back with
 * interrupts off, and passes both to ktimes_pair(), where a debugger can stop and
 * compare them with the timekeeper's fields: "CYCLES NS".
 */
#include <linux/debugfs.h>
#include <linux/jiffies.h>
#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/sched/clock.h>
#include <linux/seq_file.h>
#include <linux/timekeeping.h>
#include <asm/msr.h>

#define BATCHES		20
#define CALLS		500
#define STEP_CHANGES	3
#define STEP_MIN_NS	(3 * NSEC_PER_SEC / HZ)		/* three ticks */
#define STEP_LIMIT_NS	(50 * NSEC_PER_SEC / HZ)	/* fifty ticks */

static struct dentry *dir;

/*
 * Time BATCHES runs of CALLS evaluations of @expr (a u64) and keep the fastest run:
 * an interrupt, or the host taking the CPU from a virtual machine, only ever makes
 * a run slower. Then watch @expr for its smallest step, for STEP_MIN_NS and
 * STEP_CHANGES changes at least (a coarse clock moves once a tick, or later when
 * the tick is late), STEP_LIMIT_NS at most.
 *
 * A macro, not a function pointer: most accessors are inline wrappers, and an
 * indirect call would add its own cost to every one of them.
 */
#define MEASURE(m, name, expr, unit_ns) do {				\
	u64 t0, t1, v = 0, prev, step = 0, now, best = U64_MAX;	\
	int b, i, changes = 0;						\
									\
	for (b = 0; b < BATCHES; b++) {					\
		t0 = ktime_get_ns();					\
		for (i = 0; i < CALLS; i++)				\
			v += (expr);					\
		t1 = ktime_get_ns();					\
		best = min(best, t1 - t0);				\
	}								\
	prev = (expr);							\
	while ((now = ktime_get_ns() - t1) < STEP_LIMIT_NS &&		\
	       (now < STEP_MIN_NS || changes < STEP_CHANGES)) {	\
		v = (expr);						\
		if (v != prev) {					\
			if (!step || v - prev < step)			\
				step = v - prev;			\
			changes++;					\
		}							\
		prev = v;						\
	}								\
	seq_printf(m, "%s %llu %llu %llu\n", name, prev,		\
		   step * (unit_ns), best * 1000 / CALLS);		\
} while (0)

static u64 ts_ns(void (*get)(struct timespec64 *))
{
	struct timespec64 ts;

	get(&ts);
	return timespec64_to_ns(&ts);
}

static int table_show(struct seq_file *m, void *unused)
{
	MEASURE(m, "ktime_get", ktime_to_ns(ktime_get()), 1);
	MEASURE(m, "ktime_get_ns", ktime_get_ns(), 1);
	MEASURE(m, "ktime_get_coarse", ktime_to_ns(ktime_get_coarse()), 1);
	MEASURE(m, "ktime_get_real_ts64", ts_ns(ktime_get_real_ts64), 1);
	MEASURE(m, "ktime_get_real_ns", ktime_get_real_ns(), 1);
	MEASURE(m, "ktime_get_coarse_real_ts64", ts_ns(ktime_get_coarse_real_ts64), 1);
	MEASURE(m, "ktime_get_boottime_ns", ktime_get_boottime_ns(), 1);
	MEASURE(m, "ktime_get_raw_ns", ktime_get_raw_ns(), 1);
	MEASURE(m, "ktime_get_mono_fast_ns", ktime_get_mono_fast_ns(), 1);
	MEASURE(m, "local_clock", local_clock(), 1);
	MEASURE(m, "jiffies", (u64)jiffies, NSEC_PER_SEC / HZ);
	MEASURE(m, "get_jiffies_64", get_jiffies_64(), NSEC_PER_SEC / HZ);
	seq_printf(m, "HZ %d\n", HZ);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(table);

/* A place for a breakpoint; the asm keeps the call, and both values, in the code. */
static noinline void ktimes_pair(u64 cycles, u64 ns)
{
	asm volatile("" : : "r" (cycles), "r" (ns));
}

static int pair_show(struct seq_file *m, void *unused)
{
	unsigned long flags;
	u64 cycles, ns;

	/* No tick (which updates the timekeeper) between the two reads and the stop. */
	local_irq_save(flags);
	cycles = rdtsc_ordered();
	ns = ktime_get_ns();
	ktimes_pair(cycles, ns);
	local_irq_restore(flags);
	seq_printf(m, "%llu %llu\n", cycles, ns);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(pair);

static int __init ktimes_init(void)
{
	dir = debugfs_create_dir("ktimes", NULL);
	debugfs_create_file("table", 0444, dir, NULL, &table_fops);
	debugfs_create_file("pair", 0444, dir, NULL, &pair_fops);
	return 0;
}

static void __exit ktimes_exit(void)
{
	debugfs_remove_recursive(dir);
}

module_init(ktimes_init);
module_exit(ktimes_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Reads the kernel's clocks every way a driver can, and times each");
