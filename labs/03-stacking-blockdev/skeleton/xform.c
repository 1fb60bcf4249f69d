// SPDX-License-Identifier: GPL-2.0
/*
 * xform.c - a stacking block device that transforms data on its way down
 *
 * /dev/xform0 sits on a lower block device (module parameter "lower", a RAM
 * disk: /dev/nullb0 or /dev/ram0) and has its size. What is written to byte p
 * of xform0 is stored at byte p of the lower device transformed: each 32-bit
 * word is XORed with a keystream word that depends on the key and on p. So
 * data decoded at the wrong position comes out as garbage, never as other
 * valid data. XOR is its own inverse: reading transforms back.
 *
 * Writes: the caller's pages must not change, so the data is transformed into
 * pages of our own, and a new bio carries those down. Reads: a clone of the
 * bio goes down and fills the caller's pages; they are transformed in place
 * when the clone completes.
 */
#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/highmem.h>
#include <linux/module.h>

#define XFORM_NAME		"xform"
#define XFORM_MAX_SECTORS	128	/* 64 KiB: bigger bios are split */

static char *lower = "/dev/nullb0";
module_param(lower, charp, 0444);
MODULE_PARM_DESC(lower, "the block device under xform0 (default /dev/nullb0)");

static unsigned int key = 0x5eed;
module_param(key, uint, 0444);
MODULE_PARM_DESC(key, "the transform's key (default 0x5eed)");

/*
 * Everything the completion of one bio needs. It is not allocated on its own:
 * the bio_set puts it in front of each bio it gives us ("front_pad"), so the
 * bio we send down carries it, and container_of() finds it again.
 */
struct xform_io {
	struct bio *orig;		/* the bio from above: ended when ours ends */
	struct bvec_iter iter;		/* where our bio's data was before it went down */
	struct bio clone;		/* must be last: bio_alloc_bioset() returns this */
};

static struct {
	struct gendisk *disk;
	struct block_device *lower;
	struct bio_set bs;		/* our bios, each with a struct xform_io in front */
} xf;

/* The keystream word for the 32-bit word at byte @pos of the disk. */
static u32 xform_keystream(u64 pos)
{
	return (u32)((((pos >> 2) ^ key) * 0x9e3779b97f4a7c15ULL) >> 32);
}

/* Transform, in place, @len bytes at @data that are byte @pos of the disk onwards. */
static void xform_buf(void *data, unsigned int len, u64 pos)
{
	u32 *word = data;
	unsigned int i;

	/* A block device moves whole 512-byte sectors: pos and len are multiples of 4. */
	for (i = 0; i < len / 4; i++)
		word[i] ^= xform_keystream(pos + 4 * i);
}

static inline struct xform_io *to_io(struct bio *clone)
{
	return container_of(clone, struct xform_io, clone);
}

/* A write went down: give back our pages, and end the caller's bio with its status. */
static void xform_write_end_io(struct bio *clone)
{
	/* TODO 3: free clone's pages, end orig with clone's status */
	bio_put(clone);
}

/* A write: the transformed data goes down in pages of our own. */
static void xform_write(struct bio *bio)
{
	/* TODO 2: our own bio, transformed copies of the segments */
	bio_io_error(bio);
}

/* A read came back: transform the data in the caller's pages, then end the caller's bio. */
static void xform_read_end_io(struct bio *clone)
{
	/* TODO 5: transform along the saved iterator, end orig */
	bio_put(clone);
}

/* A read: a clone of the bio, on the lower device, sharing the caller's pages. */
static void xform_read(struct bio *bio)
{
	/* TODO 4: clone, save orig and the iterator, submit */
	bio_io_error(bio);
}

static void xform_submit_bio(struct bio *bio)
{
	/* TODO 1: split bio to the queue's limits (the rest comes back to us later) */

	switch (bio_op(bio)) {
	case REQ_OP_READ:
		xform_read(bio);
		break;
	case REQ_OP_WRITE:
		xform_write(bio);
		break;
	default:
		/* We announce no discard, no write zeroes, no write cache to flush. */
		bio->bi_status = BLK_STS_NOTSUPP;
		bio_endio(bio);
	}
}

static const struct block_device_operations xform_fops = {
	.owner		= THIS_MODULE,
	.submit_bio	= xform_submit_bio,
};

static int __init xform_init(void)
{
	int ret;

	/* A rescuer: we allocate from the bio_set inside submit_bio, as every stacking driver. */
	ret = bioset_init(&xf.bs, BIO_POOL_SIZE, offsetof(struct xform_io, clone),
			  BIOSET_NEED_BVECS | BIOSET_NEED_RESCUER);
	if (ret)
		return ret;

	/* Exclusive: nobody may write to the lower device behind our back while we are here. */
	xf.lower = blkdev_get_by_path(lower, FMODE_READ | FMODE_WRITE | FMODE_EXCL, &xf);
	if (IS_ERR(xf.lower)) {
		ret = PTR_ERR(xf.lower);
		pr_err(XFORM_NAME ": cannot open %s: %d\n", lower, ret);
		goto out_bioset;
	}

	xf.disk = blk_alloc_disk(NUMA_NO_NODE);
	if (!xf.disk) {
		ret = -ENOMEM;
		goto out_lower;
	}
	/* No major or minors of our own: the block layer gives the disk a dynamic dev_t. */
	xf.disk->fops = &xform_fops;
	xf.disk->flags |= GENHD_FL_NO_PART;
	strscpy(xf.disk->disk_name, XFORM_NAME "0", DISK_NAME_LEN);
	set_capacity(xf.disk, bdev_nr_sectors(xf.lower));
	blk_queue_logical_block_size(xf.disk->queue, bdev_logical_block_size(xf.lower));
	blk_queue_max_hw_sectors(xf.disk->queue, XFORM_MAX_SECTORS);

	ret = add_disk(xf.disk);
	if (ret)
		goto out_disk;
	pr_info(XFORM_NAME ": xform0 on %s, %llu sectors\n", lower,
		(unsigned long long)get_capacity(xf.disk));
	return 0;

out_disk:
	put_disk(xf.disk);
out_lower:
	blkdev_put(xf.lower, FMODE_READ | FMODE_WRITE | FMODE_EXCL);
out_bioset:
	bioset_exit(&xf.bs);
	return ret;
}

static void __exit xform_exit(void)
{
	/*
	 * rmmod is refused while xform0 is open (.owner), and its last close waited
	 * for the I/O: no bio of ours is in flight, none can come.
	 */
	del_gendisk(xf.disk);
	put_disk(xf.disk);
	blkdev_put(xf.lower, FMODE_READ | FMODE_WRITE | FMODE_EXCL);
	bioset_exit(&xf.bs);
	pr_info(XFORM_NAME ": removed\n");
}

module_init(xform_init);
module_exit(xform_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("A stacking block device that transforms data on its way to a lower device");
