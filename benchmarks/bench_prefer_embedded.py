#!/usr/bin/env python3
"""Heap and time of lab3's collection load with BTFOptions{PreferEmbedded: true} against the
default (cilium/ebpf parses the kernel's /sys/kernel/btf/vmlinux), on this kernel.

    sudo python benchmarks/bench_prefer_embedded.py [--repeats 7] [--work DIR]

Builds examples/lab3 for real (tests/lab3build.py: clang, bpf2go, gobtfgen with an archive of
this host's kernel, go), drops a Go test next to it that runs FindBTF and loads lab3's
coreObjects (the kprobe, tracepoints and maps), and runs that test binary as a fresh process per
measurement, alternating the two modes. Each process reports the wall time of FindBTF + load,
the bytes it allocated (runtime/metrics total), the peak live heap (sampled every 100 us during
the load) and its peak RSS (VmHWM). Medians are printed with the ratio default / preferred.
Needs root (loading BPF) and /sys/kernel/btf/vmlinux. Target (issue 15 item 4): >= 10x less peak
heap.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import lab3build  # noqa: E402

LOAD_TEST = '''package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

func heapLive(s []metrics.Sample) uint64 {
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func TestLoadFigures(t *testing.T) {
	prefer := os.Getenv("BENCH_MODE") == "preferred"
	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/heap/allocs:bytes"}}
	runtime.GC()
	base := heapLive(samples)
	allocBase := samples[1].Value.Uint64()
	var peak atomic.Uint64
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		for {
			if v := heapLive(s); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-done:
				close(stopped)
				return
			case <-time.After(100 * time.Microsecond):
			}
		}
	}()
	start := time.Now()
	found, err := FindBTF(BTFOptions{PreferEmbedded: prefer})
	if err != nil {
		t.Fatal(err)
	}
	spec, err := loadExecsnoop()
	if err != nil {
		t.Fatal(err)
	}
	var objs coreObjects
	opts := &ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{KernelTypes: found.Spec}}
	if err := spec.LoadAndAssign(&objs, opts); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if v := heapLive(samples); v > peak.Load() {
		peak.Store(v)
	}
	close(done)
	<-stopped
	allocated := samples[1].Value.Uint64() - allocBase
	objs.Close()
	status, _ := os.ReadFile("/proc/self/status")
	hwm := ""
	for _, line := range strings.Split(string(status), "\\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			hwm = strings.Fields(line)[1]
		}
	}
	fmt.Printf("FIGURES source=%s wall_ns=%d alloc=%d peak=%d hwm_kb=%s\\n", found.Source,
		elapsed.Nanoseconds(), allocated, peak.Load()-min(base, peak.Load()), hwm)
}
'''

_LINE = re.compile(r"FIGURES source=(\S+) wall_ns=(\d+) alloc=(\d+) peak=(\d+) hwm_kb=(\d+)")


def build(work: Path) -> Path:
    env = lab3build.tool_env(work / "cache")
    dest = work / "lab3"
    if not (dest / "lab3").is_file():
        lab3build.make_lab3(dest, env, None)  # the Makefile's archive: this host's kernel
    (dest / "zz_loadfigures_test.go").write_text(LOAD_TEST)
    binary = work / "loadfigures.test"
    subprocess.run(["go", "test", "-c", "-o", str(binary), "."], cwd=dest, env=env, check=True)
    return binary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--work", type=Path, help="build directory, kept for the next run")
    args = ap.parse_args()
    if os.geteuid() != 0 or not lab3build.VMLINUX.is_file():
        sys.exit("bench_prefer_embedded: needs root and /sys/kernel/btf/vmlinux (loads BPF)")
    os.environ["PATH"] = f"/usr/local/go/bin{os.pathsep}{os.environ.get('PATH', '')}"
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-prefer-"))
    work.mkdir(parents=True, exist_ok=True)
    binary = build(work)
    runs: dict[str, list[tuple[int, ...]]] = {"default": [], "preferred": []}
    sources: dict[str, set[str]] = {"default": set(), "preferred": set()}
    for _ in range(args.repeats):
        for mode in runs:  # alternating, so load changes on the machine hit both alike
            out = subprocess.run([str(binary), "-test.run", "TestLoadFigures", "-test.v"],
                                 env={**os.environ, "BENCH_MODE": mode}, capture_output=True,
                                 text=True, check=True).stdout
            m = _LINE.search(out)
            assert m, out
            sources[mode].add(m[1])
            runs[mode].append(tuple(int(v) for v in m.groups()[1:]))
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"lab3 collection load on {os.uname().release}, {args.repeats} processes per mode, "
          f"medians (load average {load})")
    print(f"{'':<22}{'default (kernel BTF)':>22}{'PreferEmbedded':>18}{'ratio':>9}")
    med = {mode: [statistics.median(col) for col in zip(*rows, strict=True)]
           for mode, rows in runs.items()}
    names = ("time, FindBTF + load", "allocated", "peak live heap", "peak RSS (VmHWM)")
    units = (("ms", 1e6), ("MB", 1e6), ("MB", 1e6), ("MB", 1e3))
    for i, (name, (unit, div)) in enumerate(zip(names, units, strict=True)):
        d, p = med["default"][i], med["preferred"][i]
        print(f"{name:<22}{d / div:>19.2f} {unit}{p / div:>15.2f} {unit}{d / max(p, 1):>8.1f}x")
    print(f"sources: default={sorted(sources['default'])} "
          f"preferred={sorted(sources['preferred'])}")
    ratio = med["default"][2] / max(med["preferred"][2], 1)
    print(f"target >= 10x less peak heap: {'met' if ratio >= 10 else 'MISSED'} ({ratio:.1f}x)")


if __name__ == "__main__":
    main()
