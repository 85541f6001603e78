/* A typical tracer: exec events with a few CO-RE reads, plus helper-availability probes on
 * enum bpf_func_id (the enum that dominates bpftool's minimized output). */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

enum bpf_func_id {
	BPF_FUNC_probe_read_kernel = 113,
	BPF_FUNC_ringbuf_output = 130,
	BPF_FUNC_get_current_task_btf = 158,
	BPF_FUNC_d_path = 147,
};

enum pid_type {
	PIDTYPE_PID,
	PIDTYPE_TGID,
};

SEC("tracepoint/sched/sched_process_exec")
int tracer_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	u64 v = BPF_CORE_READ(task, tgid);

	v += BPF_CORE_READ(task, real_parent, tgid);
	v += BPF_CORE_READ(task, mm, arg_start);
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_ringbuf_output))
		v += 1;
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_get_current_task_btf))
		v += 2;
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_d_path))
		v += 4;
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_probe_read_kernel))
		v += 8;
	v += bpf_core_enum_value(enum pid_type, PIDTYPE_PID);
	return v;
}
