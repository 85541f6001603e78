/* Self-contained kernel type definitions for gobtfgen's CO-RE test objects.
 *
 * Only the members the programs touch are declared: CO-RE matches by name, so these
 * objects do not depend on the host's kernel headers or vmlinux.h.
 */
#ifndef GOBTFGEN_TEST_COMMON_H
#define GOBTFGEN_TEST_COMMON_H

typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef short __s16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef int pid_t;

enum bpf_map_type {
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4,
	BPF_MAP_TYPE_RINGBUF = 27,
};

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define PAI __attribute__((preserve_access_index))

struct list_head {
	struct list_head *next, *prev;
} PAI;

struct qstr {
	union {
		struct {
			u32 hash;
			u32 len;
		};
		u64 hash_len;
	};
	const unsigned char *name;
} PAI;

struct dentry {
	struct dentry *d_parent;
	struct qstr d_name;
	unsigned char d_iname[32];
} PAI;

struct vfsmount;

struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
} PAI;

struct inode {
	unsigned long i_ino;
	unsigned int i_nlink;
	long long i_size;
	unsigned short i_mode;
} PAI;

struct file {
	struct path f_path;
	struct inode *f_inode;
	unsigned int f_flags;
} PAI;

/* Flat local view: in the kernel these live in an anonymous struct of mm_struct (5.x+). */
struct mm_struct {
	unsigned long arg_start, arg_end, env_start, env_end;
	unsigned long saved_auxv[2];
	unsigned long total_vm;
} PAI;

struct fs_struct {
	int users;
	struct path root, pwd;
} PAI;

struct signal_struct {
	int nr_threads;
} PAI;

struct sched_entity {
	u64 vruntime;
	u64 sum_exec_runtime;
} PAI;

struct task_struct {
	unsigned int flags;
	int prio;
	pid_t pid;
	pid_t tgid;
	char comm[16];
	struct mm_struct *mm;
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	struct fs_struct *fs;
	struct signal_struct *signal;
	struct sched_entity se;
	struct list_head children;
	unsigned sched_reset_on_fork: 1;
	unsigned sched_contributes_to_load: 1;
	/* Present in no kernel: field-exists and byte-offset relocations that fail. */
	int gobtfgen_no_such_field;
} PAI;

/* Kernel 5.14 renamed task_struct::state to __state: two flavours, one per layout. */
struct task_struct___pre514 {
	long state;
} PAI;

struct task_struct___post514 {
	unsigned int __state;
} PAI;

struct sk_buff {
	unsigned int len, data_len;
	__u16 mac_len, hdr_len;
	__u8 cloned: 1, nohdr: 1, fclone: 2, peeked: 1, head_frag: 1, pfmemalloc: 1;
	__u16 protocol;
	unsigned char *head, *data;
	unsigned int truesize;
} PAI;

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be16 u6_addr16[8];
		__be32 u6_addr32[4];
	} in6_u;
} PAI;

struct sock_common {
	union {
		struct {
			__be32 skc_daddr;
			__be32 skc_rcv_saddr;
		};
	};
	union {
		struct {
			__be16 skc_dport;
			__u16 skc_num;
		};
	};
	unsigned short skc_family;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} PAI;

struct sock {
	struct sock_common __sk_common;
	/* A kflag bitfield in most kernels, a plain u8 in some. */
	int sk_rcvbuf;
	unsigned int sk_protocol: 8;
	unsigned int sk_type: 16;
} PAI;

struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
} PAI;

struct trace_event_raw_sched_process_exec {
	struct trace_entry ent;
	unsigned int __data_loc_filename;
	pid_t pid;
	pid_t old_pid;
	char __data[0];
} PAI;

struct linux_binprm {
	struct file *file;
	const char *filename;
	int argc, envc;
} PAI;

#endif
