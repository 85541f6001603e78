// Command modvm runs tests/bpf/modcore.c's program once (BPF_PROG_TEST_RUN) and prints what
// it returned and which BTF relocated it: the gobtfgen-generated LoadBTFSpec's spec (the
// embedded merged-and-minimized vmlinux+nf_conntrack BTF) when the kernel shows no BTF, else
// nil, so cilium/ebpf reads /sys/kernel/btf/vmlinux and the loaded modules' BTF itself.
// tests/test_vm_modules.py builds it beside the code gobtfgen generate wrote and runs it in a
// Debian guest with nf_conntrack loaded.
package main

import (
	"bytes"
	_ "embed"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
)

//go:embed modcore.o
var object []byte

func main() {
	res, err := FindBTF(BTFOptions{})
	if err != nil {
		fmt.Println("findbtf error:", err)
		os.Exit(1)
	}
	types, err := LoadBTFSpec()
	if err != nil {
		fmt.Println("btf error:", err)
		os.Exit(1)
	}
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(object))
	if err != nil {
		fmt.Println("object error:", err)
		os.Exit(1)
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
		Programs: ebpf.ProgramOptions{KernelTypes: types},
	})
	if err != nil {
		fmt.Println("load error:", err)
		os.Exit(1)
	}
	defer coll.Close()
	ret, err := coll.Programs["module_layout"].Run(&ebpf.RunOptions{Data: make([]byte, 64)})
	if err != nil {
		fmt.Println("run error:", err)
		os.Exit(1)
	}
	fmt.Printf("modvm btf=%q ret=%d\n", res.String(), ret)
}
