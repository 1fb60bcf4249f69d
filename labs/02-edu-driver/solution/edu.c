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
	/* TODO 7: ack the IRQ; a factorial: keep it, not busy, wake | stub: return IRQ_NONE; */
	struct edu *edu = data;
	u32 status = ioread32(edu->regs + EDU_IRQ_STATUS);

	if (!status)
		return IRQ_NONE;
	iowrite32(status, edu->regs + EDU_IRQ_ACK);
	if (status & EDU_IRQ_FACT) {
		edu->result = ioread32(edu->regs + EDU_FACTORIAL);
		WRITE_ONCE(edu->busy, false);
		wake_up(&edu->done);
	}
	return IRQ_WAKE_THREAD;
	/* END TODO 7 */
}

/* Process context: sysfs_notify() may sleep, so it cannot be called from edu_irq(). */
static irqreturn_t edu_irq_thread(int irq, void *data)
{
	/* TODO 8: wake poll()ers of the factorial attribute: sysfs_notify() */
	struct edu *edu = data;

	sysfs_notify(&edu->pdev->dev.kobj, NULL, "factorial");
	/* END TODO 8 */
	return IRQ_HANDLED;
}

static ssize_t liveness_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	/* TODO 4: print EDU_LIVENESS as 0x%08x | stub: return -EOPNOTSUPP; */
	struct edu *edu = dev_get_drvdata(dev);

	return sysfs_emit(buf, "0x%08x\n", ioread32(edu->regs + EDU_LIVENESS));
	/* END TODO 4 */
}

static ssize_t liveness_store(struct device *dev, struct device_attribute *attr,
			      const char *buf, size_t count)
{
	/* TODO 5: parse a u32 (any base), write it to EDU_LIVENESS | stub: return -EOPNOTSUPP; */
	struct edu *edu = dev_get_drvdata(dev);
	u32 value;
	int ret = kstrtou32(buf, 0, &value);

	if (ret)
		return ret;
	iowrite32(value, edu->regs + EDU_LIVENESS);
	return count;
	/* END TODO 5 */
}
static DEVICE_ATTR_RW(liveness);

static ssize_t factorial_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	/* TODO 10: wait (at most 1 s) until not busy, print result | stub: return -EOPNOTSUPP; */
	struct edu *edu = dev_get_drvdata(dev);
	long left = wait_event_interruptible_timeout(edu->done, !READ_ONCE(edu->busy), HZ);

	if (left < 0)
		return left;
	if (!left)
		return -ETIMEDOUT;
	return sysfs_emit(buf, "%u\n", READ_ONCE(edu->result));
	/* END TODO 10 */
}

static ssize_t factorial_store(struct device *dev, struct device_attribute *attr,
			       const char *buf, size_t count)
{
	/* TODO 9: n in 0..12 or -EINVAL; wait, set busy, write n | stub: return -EOPNOTSUPP; */
	struct edu *edu = dev_get_drvdata(dev);
	unsigned int n;
	int ret = kstrtouint(buf, 0, &n);

	if (ret)
		return ret;
	if (n > EDU_FACT_MAX)
		return -EINVAL;
	mutex_lock(&edu->lock);
	/* The device ignores a new n while it computes: let the last one end. */
	if (!wait_event_timeout(edu->done, !READ_ONCE(edu->busy), HZ)) {
		mutex_unlock(&edu->lock);
		return -ETIMEDOUT;
	}
	/* Busy before the write: the interrupt may come at once. */
	WRITE_ONCE(edu->busy, true);
	iowrite32(n, edu->regs + EDU_FACTORIAL);
	mutex_unlock(&edu->lock);
	return count;
	/* END TODO 9 */
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
	/* TODO 2: enable the device, map BAR0 into edu->regs (pcim_*) | stub: return 0; */
	int ret = pcim_enable_device(edu->pdev);

	if (ret)
		return ret;
	ret = pcim_iomap_regions(edu->pdev, BIT(0), DRV_NAME);
	if (ret)
		return ret;
	edu->regs = pcim_iomap_table(edu->pdev)[0];
	return 0;
	/* END TODO 2 */
}

static int edu_check_id(struct edu *edu)
{
	/* TODO 3: check EDU_ID (-ENODEV), log "identification 0x%08x" | stub: return 0; */
	u32 id = ioread32(edu->regs + EDU_ID);

	if ((id & 0xff) != EDU_ID_MAGIC) {
		dev_err(&edu->pdev->dev, "not an edu device: identification 0x%08x\n", id);
		return -ENODEV;
	}
	dev_info(&edu->pdev->dev, "identification 0x%08x (version %u.%u)\n",
		 id, id >> 24, (id >> 16) & 0xff);
	return 0;
	/* END TODO 3 */
}

/* One MSI vector: qboot gives the VM no MP table, so legacy INTx cannot be routed. */
static int edu_setup_irq(struct edu *edu)
{
	/* TODO 6: bus master, one MSI vector, the handlers, IRQ_FACT on | stub: return 0; */
	struct pci_dev *pdev = edu->pdev;
	int ret;

	pci_set_master(pdev);
	ret = pci_alloc_irq_vectors(pdev, 1, 1, PCI_IRQ_MSI);
	if (ret < 0)
		return ret;
	ret = devm_request_threaded_irq(&pdev->dev, pci_irq_vector(pdev, 0), edu_irq,
					edu_irq_thread, 0, DRV_NAME, edu);
	if (ret)
		return ret;
	iowrite32(EDU_STATUS_IRQ_FACT, edu->regs + EDU_STATUS);
	return 0;
	/* END TODO 6 */
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
	struct edu *edu = pci_get_drvdata(pdev);

	iowrite32(0, edu->regs + EDU_STATUS);
	/* END TODO 11 */
	dev_info(&pdev->dev, "removed\n");
}

static const struct pci_device_id edu_ids[] = {
	/* TODO 1: match the edu device (PCI_DEVICE) */
	{ PCI_DEVICE(EDU_VENDOR, EDU_DEVICE) },
	/* END TODO 1 */
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
