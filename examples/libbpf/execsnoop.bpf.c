// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// execsnoop for the libbpf example: one event per successful execve. Both programs read kernel
// structures through CO-RE, so the minimized BTF that gobtfgen embeds (btfgen.c) is what makes
// them load on kernels without /sys/kernel/btf/vmlinux:
//
//   tracepoint  syscalls/sys_enter_execve   remembers the path passed to execve (the context
//                                           struct is relocated by CO-RE)
//   raw_tp      sched_process_exec          the exec succeeded: pid, ppid (real_parent->tgid),
//                                           uid, comm, path
//   tracepoint  syscalls/sys_exit_execve    forgets a failed execve
//
// vmlinux.h is generated at build time from the build machine's kernel (see Makefile).

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "execsnoop.h"

// BPF_CORE_READ expands to bpf_probe_read_kernel(), which kernels before 5.5 lack, and those
// are the kernels that need embedded BTF. On x86_64 and arm64 (separate user and kernel address
// ranges) bpf_probe_read() does the same job on every kernel.
#define bpf_probe_read_kernel bpf_probe_read
#define bpf_probe_read_kernel_str bpf_probe_read_str
#define bpf_probe_read_user_str bpf_probe_read_str

char LICENSE[] SEC("license") = "Dual BSD/GPL";

// Keyed by the thread id that called execve; LRU, so a missed cleanup cannot fill it.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct event);
} pending SEC(".maps");

// A perf event array rather than a ring buffer: ring buffers need 5.8, and the point of this
// example is older kernels.
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_execve")
int tracepoint_sys_enter_execve(struct trace_event_raw_sys_enter *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct event empty = {};
	struct event *e;

	// Not a static const: that would be global data (.rodata), which needs 5.2.
	if (bpf_map_update_elem(&pending, &tid, &empty, BPF_ANY))
		return 0;
	e = bpf_map_lookup_elem(&pending, &tid);
	if (!e)
		return 0;
	bpf_probe_read_user_str(e->filename, sizeof(e->filename), (const char *)ctx->args[0]);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_execve")
int tracepoint_sys_exit_execve(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	bpf_map_delete_elem(&pending, &tid);
	return 0;
}

// Raw tracepoints need 4.17. Their arguments are plain u64s (no CO-RE); what they point to is
// read with BPF_CORE_READ.
SEC("raw_tracepoint/sched_process_exec")
int BPF_PROG(raw_tracepoint_sched_process_exec, struct task_struct *task, pid_t old_pid_arg,
	     struct linux_binprm *bprm)
{
	__u32 old_pid = (__u32)old_pid_arg;
	struct event *e;

	// A thread other than the leader that calls execve takes over the leader's pid: the
	// pending entry is under the caller's old thread id.
	e = bpf_map_lookup_elem(&pending, &old_pid);
	if (!e) { // execveat, or an execve whose tracepoint was missed
		struct event empty = {};

		bpf_map_update_elem(&pending, &old_pid, &empty, BPF_NOEXIST);
		e = bpf_map_lookup_elem(&pending, &old_pid);
		if (!e)
			return 0;
	}
	e->pid = BPF_CORE_READ(task, tgid);
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = (__u32)bpf_get_current_uid_gid();
	BPF_CORE_READ_STR_INTO(&e->comm, task, comm);
	if (!e->filename[0])
		bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), BPF_CORE_READ(bprm, filename));
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, e, sizeof(*e));
	bpf_map_delete_elem(&pending, &old_pid);
	return 0;
}
