/* Field relocations: offsets, sizes, existence, signedness, bitfield shifts, arrays,
 * anonymous members, flavours. */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

struct event {
	u32 pid, tgid, ppid, state;
	u64 vruntime, arg_start, arg_len, ino, auxv, hash;
	char comm[16];
	char name[32];
	int prio;
	u32 reset_on_fork;
	u32 flags_size;
	int signed_flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16);
} events SEC(".maps");

SEC("tracepoint/sched/sched_process_exec")
int handle_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct event *e;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;

	e->pid = BPF_CORE_READ(task, tgid);
	e->tgid = ctx->pid;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->vruntime = BPF_CORE_READ(task, se.vruntime);
	e->prio = BPF_CORE_READ(task, prio);
	BPF_CORE_READ_STR_INTO(&e->comm, task, comm);
	e->comm[3] = BPF_CORE_READ(task, comm[3]);

	if (bpf_core_field_exists(struct task_struct___post514, __state)) {
		struct task_struct___post514 *t = (void *)task;
		e->state = BPF_CORE_READ(t, __state);
	} else {
		struct task_struct___pre514 *t = (void *)task;
		e->state = BPF_CORE_READ(t, state);
	}

	/* Unguarded on purpose: `gobtfgen check` must report it. */
	e->flags_size = BPF_CORE_READ(task, gobtfgen_no_such_field);

	e->arg_start = BPF_CORE_READ(task, mm, arg_start);
	e->arg_len = BPF_CORE_READ(task, mm, arg_end) - e->arg_start;
	e->auxv = BPF_CORE_READ(task, mm, saved_auxv[1]);
	e->ino = BPF_CORE_READ(task, mm, total_vm);
	e->hash = BPF_CORE_READ(task, fs, pwd.dentry, d_name.hash_len);
	BPF_CORE_READ_STR_INTO(&e->name, task, fs, pwd.dentry, d_name.name);

	e->reset_on_fork = BPF_CORE_READ_BITFIELD_PROBED(task, sched_reset_on_fork);
	e->flags_size = bpf_core_field_size(task->flags);
	e->signed_flags = __builtin_preserve_field_info(task->prio, BPF_FIELD_SIGNED);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("kprobe/tcp_v4_connect")
int handle_connect(void *ctx)
{
	struct sock *sk = (struct sock *)bpf_get_current_task();
	struct sk_buff *skb = (struct sk_buff *)ctx;
	u64 v = 0;

	v += BPF_CORE_READ(sk, __sk_common.skc_dport);
	v += BPF_CORE_READ(sk, __sk_common.skc_daddr);
	v += BPF_CORE_READ(sk, __sk_common.skc_family);
	v += BPF_CORE_READ(sk, __sk_common.skc_v6_daddr.in6_u.u6_addr32[3]);
	v += BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol);
	v += BPF_CORE_READ_BITFIELD_PROBED(sk, sk_type);
	v += BPF_CORE_READ_BITFIELD_PROBED(skb, cloned);
	v += BPF_CORE_READ_BITFIELD_PROBED(skb, fclone);
	v += BPF_CORE_READ_BITFIELD_PROBED(skb, pfmemalloc);
	v += BPF_CORE_READ(skb, protocol);
	if (bpf_core_field_exists(skb->hdr_len))
		v += BPF_CORE_READ(skb, hdr_len);
	v += bpf_core_field_size(sk->__sk_common.skc_v6_daddr);
	v += bpf_core_field_offset(sk->__sk_common.skc_num);
	return v;
}
