/* A kprobe tracer built for x86 only: it reads its arguments from x86's pt_regs registers
 * (what bpf_tracing.h's PT_REGS_PARM*_CORE expand to under __TARGET_ARCH_x86), so on arm64
 * kernels, whose pt_regs has regs[] instead, those relocations fail by construction. */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

struct pt_regs {
	unsigned long di;
	unsigned long si;
	unsigned long dx;
} PAI;

SEC("kprobe/do_unlinkat")
int x86_unlinkat(struct pt_regs *ctx)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	u64 v = BPF_CORE_READ(ctx, di) + BPF_CORE_READ(ctx, si);

	v += BPF_CORE_READ(task, tgid);
	return v;
}
