/* A runqlat-style scheduler tracer (benchmark object): the woken task's pid, state and
 * priority, and the run queue length of its CPU. */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

struct rq {
	unsigned int nr_running;
	u64 clock;
} PAI;

struct task_struct___sched {
	int prio;
	unsigned int __state;
	pid_t pid;
} PAI;

SEC("raw_tracepoint/sched_wakeup")
int snoop_wakeup(u64 *ctx)
{
	struct task_struct___sched *p = (void *)ctx[0];
	struct rq *rq = (void *)ctx[1];
	u64 v = BPF_CORE_READ(p, pid);

	v += BPF_CORE_READ(p, prio);
	v += BPF_CORE_READ(p, __state);
	v += BPF_CORE_READ(rq, nr_running);
	v += BPF_CORE_READ(rq, clock);
	return v;
}
