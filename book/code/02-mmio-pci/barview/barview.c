// SPDX-License-Identifier: GPL-2.0
/*
 * barview - a driver's view of BAR 0 of QEMU's edu device.
 *
 * It binds to edu, maps BAR 0 and offers two files in the device's sysfs folder:
 *
 *   bar    what the PCI core says about BAR 0 (pci_resource_start/len/flags) and
 *          where the mapping is: "start=... len=... flags=... mapping=... mapped=..."
 *   peek   write a byte offset into the BAR; reading gives "offset value", the value
 *          being ioread32() at mapping + offset.
 *
 * peek does not compare the offset with the length of the mapping. That is on
 * purpose: what happens past the end is what this module is for.
 *
 *   insmod barview.ko [maplen=BYTES]     map only the first BYTES (0: the whole BAR)
 */
#include <linux/module.h>
#include <linux/pci.h>

static unsigned long maplen;
module_param(maplen, ulong, 0444);
MODULE_PARM_DESC(maplen, "bytes of BAR 0 to map (default 0: all of it)");

struct barview {
	void __iomem *regs;
	unsigned long mapped;
	unsigned long offset;
};

static ssize_t bar_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct pci_dev *pdev = to_pci_dev(dev);
	struct barview *bv = pci_get_drvdata(pdev);

	return sysfs_emit(buf, "start=0x%llx len=0x%llx flags=0x%lx mapping=%px mapped=0x%lx\n",
			  (unsigned long long)pci_resource_start(pdev, 0),
			  (unsigned long long)pci_resource_len(pdev, 0),
			  pci_resource_flags(pdev, 0), bv->regs, bv->mapped);
}
static DEVICE_ATTR_RO(bar);

static ssize_t peek_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct barview *bv = dev_get_drvdata(dev);

	return sysfs_emit(buf, "0x%lx 0x%08x\n", bv->offset, ioread32(bv->regs + bv->offset));
}

static ssize_t peek_store(struct device *dev, struct device_attribute *attr,
			  const char *buf, size_t count)
{
	struct barview *bv = dev_get_drvdata(dev);
	unsigned long offset;
	int ret;

	ret = kstrtoul(buf, 0, &offset);
	if (ret)
		return ret;
	if (offset % 4)		/* edu answers 32-bit reads only when they are aligned */
		return -EINVAL;
	bv->offset = offset;
	return count;
}
static DEVICE_ATTR_RW(peek);

static struct attribute *barview_attrs[] = {
	&dev_attr_bar.attr,
	&dev_attr_peek.attr,
	NULL,
};
ATTRIBUTE_GROUPS(barview);

static int barview_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	unsigned long len = pci_resource_len(pdev, 0);
	struct barview *bv;
	int ret;

	bv = devm_kzalloc(&pdev->dev, sizeof(*bv), GFP_KERNEL);
	if (!bv)
		return -ENOMEM;
	ret = pcim_enable_device(pdev);		/* switches memory decoding on */
	if (ret)
		return ret;
	ret = pci_request_region(pdev, 0, KBUILD_MODNAME);	/* managed after pcim_enable */
	if (ret)
		return ret;
	bv->regs = pcim_iomap(pdev, 0, maplen);	/* ioremap() of min(len, maplen) bytes */
	if (!bv->regs)
		return -ENOMEM;
	bv->mapped = maplen && maplen < len ? maplen : len;
	pci_set_drvdata(pdev, bv);
	dev_info(&pdev->dev, "BAR 0: %pR, %lu bytes mapped at %px\n", &pdev->resource[0],
		 bv->mapped, bv->regs);
	return 0;
}

static const struct pci_device_id barview_ids[] = {
	{ PCI_DEVICE(0x1234, 0x11e8) },		/* QEMU's edu */
	{ }
};
MODULE_DEVICE_TABLE(pci, barview_ids);

static struct pci_driver barview_driver = {
	.name = KBUILD_MODNAME,
	.id_table = barview_ids,
	.probe = barview_probe,
	.dev_groups = barview_groups,
};
module_pci_driver(barview_driver);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("A driver's view of a PCI BAR: its resource, its mapping, reads past it");
