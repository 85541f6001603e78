/* Type-based and enum-value relocations. */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

enum bpf_func_id {
	BPF_FUNC_map_lookup_elem = 1,
	BPF_FUNC_get_current_task = 35,
	BPF_FUNC_probe_read_kernel = 113,
	BPF_FUNC_get_current_task_btf = 158,
	BPF_FUNC_gobtfgen_missing = 100000,
};

/* A flavoured enum: matched against the kernel's enum pid_type. */
enum pid_type___local {
	PIDTYPE_PID,
	PIDTYPE_TGID,
	PIDTYPE_PGID___flav,
};

enum gobtfgen_no_such_enum { GOBTFGEN_X = 1 };

struct bpf_perf_link {
	int dummy;
} PAI;

struct gobtfgen_no_such_struct {
	int x;
} PAI;

union bpf_attr {
	__u32 map_type;
} PAI;

typedef struct {
	int counter;
} atomic_t;

typedef long long __kernel_loff_t;
typedef __kernel_loff_t loff_t;

enum irqreturn { IRQ_NONE = 0 };
typedef enum irqreturn irqreturn_t;
typedef irqreturn_t (*irq_handler_t)(int, void *);

SEC("kprobe/do_sys_open")
int handle_types(void *ctx)
{
	u64 v = 0;

	v += bpf_core_type_exists(struct bpf_perf_link);
	v += bpf_core_type_exists(struct gobtfgen_no_such_struct);
	v += bpf_core_type_exists(union bpf_attr);
	v += bpf_core_type_exists(atomic_t);
	v += bpf_core_type_exists(irq_handler_t);
	v += bpf_core_type_size(struct task_struct);
	v += bpf_core_type_size(loff_t);
	v += bpf_core_type_size(struct list_head);
	v += bpf_core_type_id_kernel(struct task_struct);
	v += bpf_core_type_id_local(struct sk_buff);
	if (bpf_core_type_exists(struct gobtfgen_no_such_struct))
		v += bpf_core_type_size(struct gobtfgen_no_such_struct);

	v += bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_get_current_task_btf);
	v += bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_gobtfgen_missing);
	v += bpf_core_enum_value(enum bpf_func_id, BPF_FUNC_probe_read_kernel);
	v += bpf_core_enum_value(enum bpf_func_id, BPF_FUNC_map_lookup_elem);
	v += bpf_core_enum_value(enum pid_type___local, PIDTYPE_TGID);
	v += bpf_core_enum_value_exists(enum pid_type___local, PIDTYPE_PGID___flav);
	if (bpf_core_enum_value_exists(enum gobtfgen_no_such_enum, GOBTFGEN_X))
		v += bpf_core_enum_value(enum gobtfgen_no_such_enum, GOBTFGEN_X);
	return v;
}
