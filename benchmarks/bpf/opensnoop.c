/* An opensnoop-style tracer (benchmark object): the opened file's name and inode through
 * struct file, as the open tracers of libbpf-tools read them. */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

SEC("kprobe/do_filp_open")
int snoop_open(void *ctx)
{
	struct file *f = (void *)bpf_get_current_task();
	u64 v = BPF_CORE_READ(f, f_path.dentry, d_name.len);

	v += BPF_CORE_READ(f, f_inode, i_ino);
	v += BPF_CORE_READ(f, f_flags);
	return v;
}
