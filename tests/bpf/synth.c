/* Targets of the synthetic kernels built by tests/test_minimize_python_synth.py: each
 * program exercises one bpftool defect (or one libbpf rule) on a tiny kernel BTF. */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

/* The kernel has two struct gbt_dup: both have `a` at 0, only the second has `c`. */
struct gbt_dup {
	int a;
	long c;
} PAI;

/* The kernel only has gbt_flav___v2 (a flavour on the kernel side). */
struct gbt_flav {
	int x;
} PAI;

/* The kernel's struct gbt_bits has kind_flag=0 bitfields at non-byte offsets. */
struct gbt_bits {
	unsigned int lo: 3;
	unsigned int mid: 5;
	int after;
} PAI;

/* The kernel has two struct gbt_amb with `a` at different offsets: ambiguous. */
struct gbt_amb {
	int a;
} PAI;

/* In the kernel: typedef -> PTR -> FWD, and typedef -> PTR -> TYPE_TAG -> INT. */
struct gbt_opaque;
typedef struct gbt_opaque *gbt_opaque_p;
typedef int *gbt_tagged_p;

enum gbt_big {
	GBT_ONE = 1,
	GBT_TWO = 2,
};

SEC("kprobe/gbt_dup")
int prog_dup(struct gbt_dup *d)
{
	u64 v = BPF_CORE_READ(d, a);

	return v + BPF_CORE_READ(d, c);
}

SEC("kprobe/gbt_flav")
int prog_flav(struct gbt_flav *f)
{
	return BPF_CORE_READ(f, x);
}

SEC("kprobe/gbt_bits")
int prog_bits(struct gbt_bits *b)
{
	return BPF_CORE_READ_BITFIELD_PROBED(b, mid) + BPF_CORE_READ(b, after);
}

SEC("kprobe/gbt_amb")
int prog_amb(struct gbt_amb *a)
{
	return BPF_CORE_READ(a, a);
}

SEC("kprobe/gbt_types")
int prog_types(void *ctx)
{
	return bpf_core_type_exists(gbt_opaque_p) + bpf_core_type_exists(gbt_tagged_p);
}

SEC("kprobe/gbt_enum")
int prog_enum(void *ctx)
{
	return bpf_core_enum_value(enum gbt_big, GBT_TWO);
}

/* The kernel's gbt_handle points to a struct; ours is `void *`, so bpf_core_type_exists says 0.
 * A field read through gbt_holder keeps the kernel typedef, but not what it points to: in
 * bpftool's output the pointer becomes `void *` and the type check flips to 1. */
typedef void *gbt_handle;

struct gbt_holder {
	gbt_handle h;
} PAI;

SEC("kprobe/gbt_handle")
int prog_handle(struct gbt_holder *holder)
{
	u64 v = (u64)BPF_CORE_READ(holder, h);

	return v + bpf_core_type_exists(gbt_handle);
}
