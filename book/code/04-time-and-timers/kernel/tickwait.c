// SPDX-License-Identifier: GPL-2.0
/*
 * tickwait.c - busy-wait on a counter that something else advances, four ways.
 *
 * jiffies goes up by one at every timer tick (HZ times a second); the HPET's
 * main counter register goes up by itself, in hardware. A loop that waits for
 * either to reach a value must read it afresh on every turn. Whether it does
 * is up to the compiler, which assumes that memory only changes when the
 * program changes it:
 *
 *   wait_plain()  reads jiffies through a plain pointer: loaded once, spins for ever
 *   wait_relax()  the same loop with cpu_relax(), whose asm is a compiler barrier
 *   wait_once()   READ_ONCE(): one volatile load on every turn
 *   wait_hpet()   readl() of the HPET's counter register (MMIO, volatile by nature)
 *
 * On load the module times wait_relax(), wait_once() and wait_hpet() and logs
 * what it saw. wait_plain() is only called with plain=1: on this kernel
 * (PREEMPT_NONE, one CPU) that hangs the machine for good.
 */
#include <linux/io.h>
#include <linux/jiffies.h>
#include <linux/ktime.h>
#include <linux/module.h>

/* QEMU's pc machine has an HPET here even when the kernel (acpi=off) does not use it. */
#define HPET_BASE	0xfed00000
#define HPET_ID		0x000	/* bits 63..32: the counter's period in femtoseconds */
#define HPET_PERIOD	0x004
#define HPET_CONF	0x010	/* bit 0: the main counter runs */
#define HPET_COUNTER	0x0f0	/* the main counter (its low 32 bits) */
#define HPET_ENABLE	0x1

static bool plain;
module_param(plain, bool, 0444);
MODULE_PARM_DESC(plain, "also run wait_plain(): hangs this CPU for good");

/* noinline: each loop stays a function of its own, to be disassembled. */
static noinline void wait_plain(const unsigned long *counter, unsigned long until)
{
	while (time_before(*counter, until))
		;
}

static noinline void wait_relax(const unsigned long *counter, unsigned long until)
{
	while (time_before(*counter, until))
		cpu_relax();
}

static noinline void wait_once(const unsigned long *counter, unsigned long until)
{
	while (time_before(READ_ONCE(*counter), until))
		;
}

static noinline void wait_hpet(void __iomem *hpet, u32 ticks)
{
	u32 start = readl(hpet + HPET_COUNTER);

	while (readl(hpet + HPET_COUNTER) - start < ticks)
		cpu_relax();
}

/*
 * The plain pointer is the bug: jiffies itself is declared volatile, which is
 * why the kernel's own loops on it work. Casting that away is what code that
 * polls "a timer register" through an ordinary pointer does by accident.
 */
static const unsigned long *ticks(void)
{
	return (const unsigned long *)&jiffies;
}

static void time_jiffies(const char *name,
			 void (*wait)(const unsigned long *, unsigned long))
{
	ktime_t start = ktime_get();

	wait(ticks(), jiffies + HZ / 10);
	pr_info("%s: %d jiffies (HZ=%d) passed in %lld us\n", name, HZ / 10, HZ,
		ktime_us_delta(ktime_get(), start));
}

static void time_hpet(void)
{
	void __iomem *hpet = ioremap(HPET_BASE, 0x400);
	u32 period_fs, ticks_1ms;
	ktime_t start;

	if (!hpet)
		return;
	period_fs = readl(hpet + HPET_PERIOD);
	/* A kernel booted without ACPI never started the counter: start it. */
	if (!(readl(hpet + HPET_CONF) & HPET_ENABLE))
		writel(readl(hpet + HPET_CONF) | HPET_ENABLE, hpet + HPET_CONF);
	ticks_1ms = 1000000000000ULL / period_fs;
	start = ktime_get();
	wait_hpet(hpet, ticks_1ms);
	pr_info("wait_hpet: %u HPET ticks (period %u fs) passed in %lld us\n", ticks_1ms,
		period_fs, ktime_us_delta(ktime_get(), start));
	iounmap(hpet);
}

static int __init tickwait_init(void)
{
	time_jiffies("wait_relax", wait_relax);
	time_jiffies("wait_once", wait_once);
	time_hpet();
	if (plain) {
		pr_info("wait_plain: starting; this CPU will not come back\n");
		time_jiffies("wait_plain", wait_plain);
	}
	return 0;
}

static void __exit tickwait_exit(void)
{
}

module_init(tickwait_init);
module_exit(tickwait_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Busy-waits on jiffies and on the HPET counter, right and wrong");
