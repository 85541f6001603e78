// Command equiv loads lab3's BPF programs once per kernel BTF given on stdin and prints the
// instructions the kernel holds after loading (xlated, so after the verifier), as JSON lines.
// tests/test_equivalence.py builds it next to the Go code and payload gobtfgen generated for
// lab3 (btfgen*.go, btfgen_*.payload): that generated code supplies BTFGenRaw, so the minimized
// BTF is read back from the payload by the same runtime a user's binary runs.
//
// Input lines: "<key>\t<path of the full BTF of that kernel>[\t<path of its minimized BTF>]".
// For each, two output lines: variant "full" (KernelTypes = the full BTF) and "minimized"
// (KernelTypes = the payload's, or the given file: how the test passes kernels of the other
// arch, whose payload this binary does not embed).
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/rlimit"
)

type result struct {
	Key      string              `json:"key"`
	Variant  string              `json:"variant"`
	Error    string              `json:"error,omitempty"`
	Programs map[string][]string `json:"programs,omitempty"` // name -> "fields<TAB>text" per insn
}

func main() {
	object := flag.String("object", "", "lab3's BPF object (execsnoop_x86_bpfel.o)")
	flag.Parse()
	if *object == "" {
		fmt.Fprintln(os.Stderr, "equiv: -object is required")
		os.Exit(2)
	}
	if err := run(*object); err != nil {
		fmt.Fprintf(os.Stderr, "equiv: %v\n", err)
		os.Exit(1)
	}
}

func run(object string) error {
	if err := rlimit.RemoveMemlock(); err != nil {
		return err
	}
	spec, err := ebpf.LoadCollectionSpec(object)
	if err != nil {
		return fmt.Errorf("read %s: %w", object, err)
	}
	// fentry and friends find their attach target in the running kernel's own BTF; no
	// KernelTypes stands in for it, so minimized BTF has nothing to prove there (and lab3
	// does not load them with embedded BTF).
	for name, prog := range spec.Programs {
		switch prog.Type {
		case ebpf.Tracing, ebpf.LSM, ebpf.Extension, ebpf.StructOps:
			delete(spec.Programs, name)
		}
	}

	// Every load shares one set of maps: the xlated instructions name maps by id, so fresh
	// maps per load would make identical programs differ.
	maps := make(map[string]*ebpf.Map)
	for name, ms := range spec.Maps {
		m, err := ebpf.NewMap(ms.Copy())
		if err != nil {
			return fmt.Errorf("create map %s: %w", name, err)
		}
		defer m.Close()
		maps[name] = m
	}

	out := json.NewEncoder(os.Stdout)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		fields := strings.Split(in.Text(), "\t")
		if len(fields) < 2 || len(fields) > 3 {
			return fmt.Errorf("input line %q: want <key>\\t<btf path>[\\t<minimized btf path>]", in.Text())
		}
		key, path, minPath := fields[0], fields[1], ""
		if len(fields) == 3 {
			minPath = fields[2]
		}
		for _, variant := range []string{"full", "minimized"} {
			res := result{Key: key, Variant: variant}
			types, err := kernelTypes(variant, key, path, minPath)
			if err == nil {
				res.Programs, err = load(spec, maps, types)
			}
			if err != nil {
				res.Error = err.Error()
			}
			if err := out.Encode(res); err != nil {
				return err
			}
		}
	}
	return in.Err()
}

func kernelTypes(variant, key, path, minPath string) (*btf.Spec, error) {
	if variant == "full" {
		spec, err := btf.LoadSpec(path)
		if err != nil {
			return nil, fmt.Errorf("full BTF %s: %w", path, err)
		}
		return spec, nil
	}
	var raw []byte
	var err error
	if minPath != "" {
		raw, err = os.ReadFile(minPath)
	} else {
		raw, err = BTFGenRaw(key)
	}
	if err != nil {
		return nil, fmt.Errorf("payload: %w", err)
	}
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("minimized BTF of %s: %w", key, err)
	}
	return spec, nil
}

func load(spec *ebpf.CollectionSpec, maps map[string]*ebpf.Map, types *btf.Spec) (map[string][]string, error) {
	coll, err := ebpf.NewCollectionWithOptions(spec.Copy(), ebpf.CollectionOptions{
		MapReplacements: maps,
		Programs:        ebpf.ProgramOptions{KernelTypes: types},
	})
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("%+v", verr)
		}
		return nil, err
	}
	defer coll.Close()

	names := make([]string, 0, len(coll.Programs))
	for name := range coll.Programs {
		names = append(names, name)
	}
	sort.Strings(names)
	progs := make(map[string][]string, len(names))
	for _, name := range names {
		info, err := coll.Programs[name].Info()
		if err != nil {
			return nil, fmt.Errorf("program %s: info: %w", name, err)
		}
		insns, err := info.Instructions()
		if err != nil {
			return nil, fmt.Errorf("program %s: xlated instructions: %w", name, err)
		}
		lines := make([]string, 0, len(insns))
		for _, ins := range insns {
			// The raw fields, not ins.Marshal: helper calls in xlated code carry kernel
			// addresses as immediates, which Marshal refuses.
			raw := fmt.Sprintf("%02x %d %d %d %#x", uint8(ins.OpCode), ins.Dst, ins.Src, ins.Offset, uint64(ins.Constant))
			lines = append(lines, raw+"\t"+fmt.Sprint(ins))
		}
		progs[name] = lines
	}
	return progs, nil
}
