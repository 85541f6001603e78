/* A biolatency-style tracer (benchmark object): the disk and size of a block request, through
 * struct request, bio and gendisk. */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

struct gendisk {
	int major;
	int first_minor;
	char disk_name[32];
} PAI;

struct block_device {
	u32 bd_dev;
	struct gendisk *bd_disk;
} PAI;

struct bio {
	struct bio *bi_next;
	struct block_device *bi_bdev;
	unsigned int bi_opf;
} PAI;

struct request_queue {
	struct gendisk *disk;
} PAI;

struct request {
	struct request_queue *q;
	unsigned int cmd_flags;
	unsigned int __data_len;
	struct bio *bio;
	u64 start_time_ns;
} PAI;

SEC("kprobe/blk_mq_start_request")
int snoop_block(void *ctx)
{
	struct request *rq = (void *)bpf_get_current_task();
	u64 v = BPF_CORE_READ(rq, __data_len);

	v += BPF_CORE_READ(rq, cmd_flags);
	v += BPF_CORE_READ(rq, start_time_ns);
	v += BPF_CORE_READ(rq, q, disk, major);
	v += BPF_CORE_READ(rq, bio, bi_opf);
	return v;
}
