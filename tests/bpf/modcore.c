/* A program whose answer depends on a module-only type's layout in the running kernel:
 * struct nf_conntrack_net lives only in nf_conntrack.ko on Debian's 6.1 kernels. Run with
 * BPF_PROG_TEST_RUN (tests/test_vm_modules.py), it returns the CO-RE-relocated offset and
 * size of expect_count and the type's size, packed: offset | type size << 8 | field size << 24.
 */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

typedef struct {
	int counter;
} atomic_t;

struct nf_conntrack_net {
	atomic_t count;
	unsigned int expect_count;
} __attribute__((preserve_access_index));

SEC("socket")
int module_layout(void *skb)
{
	u32 off = bpf_core_field_offset(struct nf_conntrack_net, expect_count);
	u32 fsz = bpf_core_field_size(struct nf_conntrack_net, expect_count);
	u32 tsz = bpf_core_type_size(struct nf_conntrack_net);

	return off | tsz << 8 | fsz << 24;
}
