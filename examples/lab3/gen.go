package main

// `make` runs these steps with dependency tracking; `go generate` runs them all, in order.
//   1. vmlinux.h from this machine's kernel BTF (only the compiler reads it: CO-RE relocations
//      are resolved at load time against the BTF that FindBTF picks).
//   2. bpf2go: execsnoop.bpf.c -> execsnoop_{x86,arm64}_bpfel.{o,go}.
//   3. gobtfgen: the objects plus a btfhub archive -> btfgen*.go, btfgen_*.payload and
//      Makefile.btfgen. The Makefile picks the archive ($BTFHUB_ARCHIVE, or one made from this
//      host's kernel BTF).

//go:generate make --no-print-directory vmlinux.h
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target amd64,arm64 -type event execsnoop execsnoop.bpf.c
//go:generate make --no-print-directory btfgen
