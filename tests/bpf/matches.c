/* bpf_core_type_matches needs clang >= 15; with clang 14 the test helper compiles these
 * type-exists relocations and rewrites their kind to TYPE_MATCHES (12) in .BTF.ext, which
 * is exactly what clang 15 emits for the same source. */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

struct path___m {
	struct vfsmount *mnt;
	struct dentry *dentry;
} PAI;

struct qstr___m {
	union {
		struct {
			u32 hash;
			u32 len;
		};
		u64 hash_len;
	};
	const unsigned char *name;
} PAI;

/* Wrong member type: must not match. */
struct list_head___m {
	int next;
} PAI;

typedef struct {
	int counter;
} atomic_t;

SEC("kprobe/vfs_read")
int handle_matches(void *ctx)
{
	u64 v = 0;

	v += bpf_core_type_exists(struct path___m);
	v += bpf_core_type_exists(struct qstr___m);
	v += bpf_core_type_exists(struct list_head___m);
	v += bpf_core_type_exists(atomic_t);
	return v;
}
