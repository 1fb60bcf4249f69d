// SPDX-License-Identifier: GPL-2.0
/*
 * edu.c - a driver for QEMU's "edu" PCI device (vendor 0x1234, device 0x11e8)
 *
 * The device computes factorials: write n to its factorial register and, when
 * it is done, it raises an interrupt (MSI) and the register holds n!. This
 * driver gives that to user space through two sysfs attributes of the PCI
 * device, /sys/bus/pci/devices/<address>/:
 *
 *   liveness   write a number; reading gives the device's answer, its complement
 *   factorial  write n (0..12) to start a computation; reading waits for the
 *              result and prints it. poll() on it wakes when a result arrives.
 *
 * The device is specified in QEMU's docs/specs/edu.txt.
 */
#include <linux/interrupt.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/sysfs.h>
#include <linux/wait.h>

#define DRV_NAME	"edu"
#define EDU_VENDOR	0x1234
#define EDU_DEVICE	0x11e8

/* Registers in BAR0. All are 32 bits wide: the device ignores other sizes. */
#define EDU_ID		0x00	/* identification: 0xRRrr00ed, version RR.rr */
#define EDU_LIVENESS	0x04	/* reads back the complement of what was written */
#define EDU_FACTORIAL	0x08	/* write n to start; read n! once done */
#define EDU_STATUS	0x20	/* bit 0: computing; bit 7: interrupt when done */
#define EDU_IRQ_STATUS	0x24	/* why the device interrupted */
#define EDU_IRQ_ACK	0x64	/* write the EDU_IRQ_STATUS bits handled */

#define EDU_ID_MAGIC		0xed	/* the low byte of EDU_ID */
#define EDU_STATUS_IRQ_FACT	0x80
#define EDU_IRQ_FACT		0x01	/* in EDU_IRQ_STATUS: a factorial is done */
#define EDU_FACT_MAX		12	/* 13! does not fit in 32 bits */

struct edu {
	struct pci_dev *pdev;
	void __iomem *regs;		/* BAR0 */
	struct mutex lock;		/* one computation at a time */
	wait_queue_head_t done;		/* woken when a computation ends */
	bool busy;			/* the device computes for us */
	u32 result;			/* the last factorial the device gave */
};

/* Hard interrupt context: talk to the device and wake waiters, never sleep. */
static irqreturn_t edu_irq(int irq, void *data)
{
	/* TODO 7: ack the IRQ; a factorial: keep it, not busy, wake */
	return IRQ_NONE;
}

/* Process context: sysfs_notify() may sleep, so it cannot be called from edu_irq(). */
static irqreturn_t edu_irq_thread(int irq, void *data)
{
	/* TODO 8: wake poll()ers of the factorial attribute: sysfs_notify() */
	return IRQ_HANDLED;
}

static ssize_t liveness_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	/* TODO 4: print EDU_LIVENESS as 0x%08x */
	return -EOPNOTSUPP;
}

static ssize_t liveness_store(struct device *dev, struct device_attribute *attr,
			      const char *buf, size_t count)
{
	/* TODO 5: parse a u32 (any base), write it to EDU_LIVENESS */
	return -EOPNOTSUPP;
}
static DEVICE_ATTR_RW(liveness);

static ssize_t factorial_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	/* TODO 10: wait (at most 1 s) until not busy, print result */
	return -EOPNOTSUPP;
}

static ssize_t factorial_store(struct device *dev, struct device_attribute *attr,
			       const char *buf, size_t count)
{
	/* TODO 9: n in 0..12 or -EINVAL; wait, set busy, write n */
	return -EOPNOTSUPP;
}
static DEVICE_ATTR_RW(factorial);

static struct attribute *edu_attrs[] = {
	&dev_attr_liveness.attr,
	&dev_attr_factorial.attr,
	NULL,
};
ATTRIBUTE_GROUPS(edu);

/* Enable the device and map BAR0. pcim_*: undone by themselves when the driver unbinds. */
static int edu_map(struct edu *edu)
{
	/* TODO 2: enable the device, map BAR0 into edu->regs (pcim_*) */
	return 0;
}

static int edu_check_id(struct edu *edu)
{
	/* TODO 3: check EDU_ID (-ENODEV), log "identification 0x%08x" */
	return 0;
}

/* One MSI vector: qboot gives the VM no MP table, so legacy INTx cannot be routed. */
static int edu_setup_irq(struct edu *edu)
{
	/* TODO 6: bus master, one MSI vector, the handlers, IRQ_FACT on */
	return 0;
}

static int edu_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct edu *edu;
	int ret;

	edu = devm_kzalloc(&pdev->dev, sizeof(*edu), GFP_KERNEL);
	if (!edu)
		return -ENOMEM;
	edu->pdev = pdev;
	mutex_init(&edu->lock);
	init_waitqueue_head(&edu->done);
	pci_set_drvdata(pdev, edu);

	ret = edu_map(edu);
	if (ret)
		return ret;
	ret = edu_check_id(edu);
	if (ret)
		return ret;
	return edu_setup_irq(edu);
}

static void edu_remove(struct pci_dev *pdev)
{
	/* TODO 11: stop the device from interrupting (EDU_STATUS) */
	dev_info(&pdev->dev, "removed\n");
}

static const struct pci_device_id edu_ids[] = {
	/* TODO 1: match the edu device (PCI_DEVICE) */
	{ }
};
MODULE_DEVICE_TABLE(pci, edu_ids);

static struct pci_driver edu_driver = {
	.name = DRV_NAME,
	.id_table = edu_ids,
	.probe = edu_probe,
	.remove = edu_remove,
	.dev_groups = edu_groups,
};
module_pci_driver(edu_driver);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("A driver for QEMU's edu PCI device");
