/* A second object sharing types with fields.c (several objects in one run). */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

SEC("kprobe/security_bprm_check")
int handle_bprm(void *ctx)
{
	struct linux_binprm *bprm = ctx;
	u64 v = 0;

	v += BPF_CORE_READ(bprm, file, f_inode, i_ino);
	v += BPF_CORE_READ(bprm, file, f_inode, i_mode);
	v += BPF_CORE_READ(bprm, file, f_flags);
	v += BPF_CORE_READ(bprm, argc);
	v += BPF_CORE_READ(bprm, file, f_path.dentry, d_iname[4]);
	v += BPF_CORE_READ(bprm, file, f_path.dentry, d_parent, d_name.len);
	return v;
}

SEC("kprobe/tcp_sendmsg")
int handle_send(void *ctx)
{
	struct sock *sk = ctx;
	struct task_struct *task = (void *)bpf_get_current_task();
	u64 v = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);

	v += BPF_CORE_READ(sk, sk_rcvbuf);
	v += BPF_CORE_READ(task, group_leader, pid);
	v += BPF_CORE_READ(task, signal, nr_threads);
	v += BPF_CORE_READ(task, se.sum_exec_runtime);
	return v;
}
