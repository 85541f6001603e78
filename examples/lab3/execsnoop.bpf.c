//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// execsnoop for lab3: one event per successful execve, built from three program types that
// each read kernel structures through CO-RE, so the minimized BTF embedded by gobtfgen is what
// makes them load on kernels without /sys/kernel/btf/vmlinux:
//
//   tracepoint  syscalls/sys_enter_execve   remembers the path passed to execve
//   kprobe      security_bprm_check         records the uid of the new credentials
//   raw_tp      sched_process_exec          the exec succeeded: emit pid, ppid, uid, comm, path
//   tracepoint  syscalls/sys_exit_execve    forgets a failed execve
//
// plus fentry/security_bprm_check, the kprobe's job done the modern way. fentry attaches through
// the running kernel's own BTF, which no embedded BTF can replace: gobtfgen warns about it, and
// lab3 loads it only on kernels with /sys/kernel/btf/vmlinux, using the kprobe elsewhere (and
// where the kernel has no kprobes, as some minimal kernels do, fentry is the only way).
//
// vmlinux.h is generated at build time (see Makefile); the objects are built by bpf2go.

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

// BPF_CORE_READ expands to bpf_probe_read_kernel(), which kernels before 5.5 do not have, and
// those are the kernels that need embedded BTF. bpf_probe_read() does the same job on every
// kernel of the two architectures this example targets (both have non-overlapping user and
// kernel address spaces), so use it everywhere.
#define bpf_probe_read_kernel bpf_probe_read
#define bpf_probe_read_kernel_str bpf_probe_read_str
#define bpf_probe_read_user_str bpf_probe_read_str

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define TASK_COMM_LEN 16
#define FILENAME_LEN 256

struct event {
	__u32 pid;
	__u32 ppid;
	__u32 uid;
	__u8 comm[TASK_COMM_LEN];
	__u8 filename[FILENAME_LEN];
};

struct pending {
	__u32 uid;
	__u32 has_uid;
	__u8 filename[FILENAME_LEN];
};

// Keyed by the thread id that called execve. An LRU map so that a missed cleanup (a probe that
// failed to attach) cannot fill it up.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct pending);
} pending SEC(".maps");

// Too large for the BPF stack; one scratch slot per CPU.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event);
} scratch SEC(".maps");

// A perf event array rather than a ring buffer: ring buffers need 5.8, and the point of this
// example is older kernels.
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps");

// Starts a pending entry. Not a static const: that would put it in .rodata, and global data
// needs 5.2, while the kernels that need embedded BTF are older.
static __always_inline struct pending *pending_start(__u32 tid, __u64 flags)
{
	struct pending empty = {};

	if (bpf_map_update_elem(&pending, &tid, &empty, flags))
		return NULL;
	return bpf_map_lookup_elem(&pending, &tid);
}

// Architecture-neutral first argument of a kprobe. The flavours (the ___ suffix) match the
// kernel's struct pt_regs / struct user_pt_regs by CO-RE, and they do not depend on vmlinux.h,
// which comes from the build host's architecture while bpf2go also compiles for the other one.
struct pt_regs___x86 {
	unsigned long di;
} __attribute__((preserve_access_index));

struct user_pt_regs___arm64 {
	unsigned long regs[31];
} __attribute__((preserve_access_index));

static __always_inline unsigned long kprobe_arg1(void *ctx)
{
#if defined(__TARGET_ARCH_x86)
	return ((struct pt_regs___x86 *)ctx)->di;
#elif defined(__TARGET_ARCH_arm64)
	return ((struct user_pt_regs___arm64 *)ctx)->regs[0];
#else
#error "lab3 supports x86 and arm64 only"
#endif
}

SEC("tracepoint/syscalls/sys_enter_execve")
int tracepoint_sys_enter_execve(struct trace_event_raw_sys_enter *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pending *p;

	p = pending_start(tid, BPF_ANY);
	if (!p)
		return 0;
	// A CO-RE relocated context access: trace_event_raw_sys_enter comes from the kernel's BTF.
	bpf_probe_read_user_str(p->filename, sizeof(p->filename), (const char *)ctx->args[0]);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_execve")
int tracepoint_sys_exit_execve(struct trace_event_raw_sys_exit *ctx)
{
	// A successful execve was reported by sched_process_exec, which already removed the entry.
	__u32 tid = (__u32)bpf_get_current_pid_tgid();

	bpf_map_delete_elem(&pending, &tid);
	return 0;
}

static __always_inline int record_bprm(struct linux_binprm *bprm)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pending *p;

	p = bpf_map_lookup_elem(&pending, &tid);
	if (!p) {
		// execveat, or an execve whose tracepoint was missed: start from the kernel's copy.
		p = pending_start(tid, BPF_NOEXIST);
		if (!p)
			return 0;
		bpf_probe_read_kernel_str(p->filename, sizeof(p->filename), BPF_CORE_READ(bprm, filename));
	}
	p->uid = BPF_CORE_READ(bprm, cred, uid.val);
	p->has_uid = 1;
	return 0;
}

SEC("kprobe/security_bprm_check")
int kprobe_security_bprm_check(void *ctx)
{
	return record_bprm((struct linux_binprm *)kprobe_arg1(ctx));
}

SEC("fentry/security_bprm_check")
int BPF_PROG(fentry_security_bprm_check, struct linux_binprm *bprm)
{
	return record_bprm(bprm);
}

// BPF_PROG reads the arguments as plain u64s: the raw tracepoint context is a fixed UAPI layout
// and needs no CO-RE relocation. Raw tracepoints need 4.17; the tracer needs them, the
// minimized BTF does not change that.
SEC("raw_tracepoint/sched_process_exec")
int BPF_PROG(raw_tracepoint_sched_process_exec, struct task_struct *task, pid_t old_pid_arg,
	     struct linux_binprm *bprm)
{
	__u32 old_pid = (__u32)old_pid_arg;
	__u32 zero = 0;
	struct pending *p;
	struct event *e;

	e = bpf_map_lookup_elem(&scratch, &zero);
	if (!e)
		return 0;
	e->pid = BPF_CORE_READ(task, tgid);
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	BPF_CORE_READ_STR_INTO(&e->comm, task, comm);

	// A thread other than the leader that calls execve takes over the leader's pid: the
	// pending entry is under the caller's old thread id.
	p = bpf_map_lookup_elem(&pending, &old_pid);
	if (p && p->filename[0]) {
		__builtin_memcpy(e->filename, p->filename, sizeof(e->filename));
	} else {
		bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), BPF_CORE_READ(bprm, filename));
	}
	if (p && p->has_uid)
		e->uid = p->uid;
	else
		e->uid = (__u32)bpf_get_current_uid_gid();
	if (p)
		bpf_map_delete_elem(&pending, &old_pid);

	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, e, sizeof(*e));
	return 0;
}
