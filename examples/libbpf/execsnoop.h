/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The event the BPF side sends, shared by execsnoop.bpf.c and execsnoop.c. */
#ifndef EXECSNOOP_H
#define EXECSNOOP_H

#define TASK_COMM_LEN 16
#define FILENAME_LEN 256

struct event {
	unsigned int pid;
	unsigned int ppid;
	unsigned int uid;
	unsigned char comm[TASK_COMM_LEN];
	unsigned char filename[FILENAME_LEN];
};

#endif
