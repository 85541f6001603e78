// Command modequiv loads a BPF object's programs once per kernel BTF named on its command
// line (KernelTypes = that file) and prints, per file, one JSON line: the instructions the
// kernel holds after loading (xlated) per program, or the load error. tests/test_split_minimize.py
// compares a merged vmlinux+module BTF with its minimized form: same instructions, same
// CO-RE results under cilium/ebpf's rules.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/rlimit"
)

type result struct {
	Path     string              `json:"path"`
	Error    string              `json:"error,omitempty"`
	Programs map[string][]string `json:"programs,omitempty"`
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: modequiv OBJECT BTF...")
		os.Exit(2)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out := json.NewEncoder(os.Stdout)
	for _, path := range os.Args[2:] {
		res := result{Path: path}
		progs, err := load(os.Args[1], path)
		if err != nil {
			res.Error = err.Error()
		}
		res.Programs = progs
		if err := out.Encode(res); err != nil {
			panic(err)
		}
	}
}

func load(object, path string) (map[string][]string, error) {
	spec, err := ebpf.LoadCollectionSpec(object)
	if err != nil {
		return nil, err
	}
	types, err := btf.LoadSpec(path)
	if err != nil {
		return nil, fmt.Errorf("BTF %s: %w", path, err)
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
		Programs: ebpf.ProgramOptions{KernelTypes: types},
	})
	if err != nil {
		return nil, err
	}
	defer coll.Close()
	names := make([]string, 0, len(coll.Programs))
	for name := range coll.Programs {
		names = append(names, name)
	}
	sort.Strings(names)
	progs := make(map[string][]string)
	for _, name := range names {
		info, err := coll.Programs[name].Info()
		if err != nil {
			return nil, err
		}
		insns, err := info.Instructions()
		if err != nil {
			return nil, err
		}
		for _, ins := range insns {
			progs[name] = append(progs[name], fmt.Sprintf("%v", ins))
		}
	}
	return progs, nil
}
