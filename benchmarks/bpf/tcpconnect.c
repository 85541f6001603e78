/* A tcpconnect-style tracer (benchmark object): addresses and ports of a connecting socket
 * through sock_common, as tcpconnect reads them. */
#include "common.h"

char LICENSE[] SEC("license") = "GPL";

SEC("kprobe/tcp_v4_connect")
int snoop_connect(void *ctx)
{
	struct sock *sk = (void *)bpf_get_current_task();
	u64 v = BPF_CORE_READ(sk, __sk_common.skc_daddr);

	v += BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
	v += BPF_CORE_READ(sk, __sk_common.skc_dport);
	v += BPF_CORE_READ(sk, __sk_common.skc_family);
	return v;
}
