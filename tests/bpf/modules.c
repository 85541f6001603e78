/* Reads of kernel-module types (Debian 12's 6.1 kernels), for module BTF merged into the
 * kernel's (tests/test_split_minimize.py):
 * - struct nf_conntrack_net lives only in nf_conntrack.ko;
 * - struct nf_conntrack_l4proto is in nf_conntrack.ko and again in nf_conntrack_netlink.ko's
 *   split BTF (pahole deduplicates a module against vmlinux only);
 * - struct nf_conntrack_expect is in vmlinux and, of another shape deeper down, in
 *   nf_conntrack_broadcast.ko;
 * - struct nf_conn is vmlinux's.
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

struct nf_conntrack_l4proto {
	u8 l4proto;
	_Bool allow_clash;
} __attribute__((preserve_access_index));

struct nf_conntrack_expect {
	unsigned int flags;
	unsigned int class;
} __attribute__((preserve_access_index));

struct nf_conn {
	unsigned long status;
	u32 mark;
} __attribute__((preserve_access_index));

SEC("kprobe/nf_conntrack_in")
int handle_ct(void *ctx)
{
	struct nf_conntrack_net *cnet = ctx;
	struct nf_conntrack_l4proto *l4 = ctx;
	struct nf_conntrack_expect *exp = ctx;
	struct nf_conn *ct = ctx;
	u64 v = 0;

	v += BPF_CORE_READ(cnet, count.counter);
	v += BPF_CORE_READ(cnet, expect_count);
	v += BPF_CORE_READ(l4, l4proto);
	v += BPF_CORE_READ(l4, allow_clash);
	v += BPF_CORE_READ(exp, flags);
	v += BPF_CORE_READ(exp, class);
	v += BPF_CORE_READ(ct, status);
	v += BPF_CORE_READ(ct, mark);
	if (bpf_core_type_exists(struct nf_conntrack_net))
		v += bpf_core_type_size(struct nf_conntrack_net);
	return v;
}
