/* An execsnoop-style tracer: parent and session reads through task_struct, one of them
 * guarded by an existence check on a field no kernel has. */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

SEC("tracepoint/sched/sched_process_exec")
int snoop_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	u64 v = BPF_CORE_READ(task, real_parent, tgid);

	v += BPF_CORE_READ(task, group_leader, pid);
	v += BPF_CORE_READ(task, mm, arg_start);
	if (bpf_core_field_exists(task->gobtfgen_no_such_field))
		v += BPF_CORE_READ(task, gobtfgen_no_such_field);
	return v;
}
