#!/usr/bin/env python3
"""Benchmark the first lookup of the generated C, Rust and Go runtimes on one payload of 2,000
kernels (payload version 2).

    python benchmarks/bench_c_rust_runtime.py [--kernels 2000] [--runs 30] [--no-go]

The payload is built as benchmarks/bench_go_runtime.py builds it: real bpftool-minimized BTFs
of the test CO-RE objects (clang and bpftool installed; else synthetic BTFs), each kernel
moving three structs of its base so that no two kernels dedup, over the distros btfhub
carries. The kernel looked up is the middle key, with an os-release whose VERSION_ID has a
minor the archive cuts (two distro keys tried), as in the Go benchmark. A first lookup is
everything a process does for its first BTF: parse the payload's index, look the kernel up,
rebuild its BTF. Each run repeats it from scratch (nothing is cached between runs).

  C     btfgen.c (gcc -O2, zlib) and a main that times btfgen_parse_payload + btfgen_lookup +
        btfgen_blob_of; its heap is counted by malloc/calloc/realloc/free defined in the bench
        program over glibc's __libc_* (zlib's allocations included): the peak of live bytes.
  Rust  btfgen.rs (cargo --release, miniz_oxide) and a main that times lookup_btf; its heap is
        counted by a #[global_allocator] over the system allocator: the peak of live bytes.
  Go    tests/gotest's BenchmarkEmbeddedCold (bench_go_runtime.py), which also loads the
        cilium/ebpf spec; Go reports the bytes allocated per lookup (B/op), an upper bound of
        its peak heap.

Targets (issue 3, issue 17): a first lookup within 5 ms and 2 MB at 2,000 kernels.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_go_runtime import bench_blobs, payload_entries, run_size  # noqa: E402

from gobtfgen import keys, pack, render, targets  # noqa: E402
from gobtfgen.targets import c, rust  # noqa: E402
from tests import cargo  # noqa: E402
from tests.gomod import find_go  # noqa: E402

MAX_NS, MAX_BYTES = 5_000_000, 2 << 20

C_MAIN = r"""
#include "btfgen.c"

#include <malloc.h>
#include <time.h>

/* glibc's own allocator, under the names it exports; the functions below count live bytes. */
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);

static long long bench_live, bench_peak;

static void bench_add(long long n)
{
    bench_live += n;
    if (bench_live > bench_peak)
        bench_peak = bench_live;
}

void *malloc(size_t n)
{
    void *p = __libc_malloc(n);

    if (p)
        bench_add((long long)malloc_usable_size(p));
    return p;
}

void *calloc(size_t n, size_t size)
{
    void *p = __libc_calloc(n, size);

    if (p)
        bench_add((long long)malloc_usable_size(p));
    return p;
}

void *realloc(void *p, size_t n)
{
    long long old = p ? (long long)malloc_usable_size(p) : 0;
    void *q = __libc_realloc(p, n);

    if (q)
        bench_add((long long)malloc_usable_size(q) - old);
    else if (n == 0)
        bench_add(-old);
    return q;
}

void free(void *p)
{
    if (p)
        bench_add(-(long long)malloc_usable_size(p));
    __libc_free(p);
}

static long long now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;

    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int runs = argc == 5 ? atoi(argv[4]) : 0;
    long long *ns = calloc(runs > 0 ? (size_t)runs : 1, sizeof(*ns)), peak = 0;
    char key[512] = "";

    if (runs <= 0 || !ns) {
        fprintf(stderr, "usage: bench OS_RELEASE MACHINE RELEASE RUNS\n");
        return 2;
    }
    for (int r = 0; r < runs; r++) {
        struct btfgen_str err = { 0 };
        struct btfgen_index x;
        const char *via;
        unsigned char *btf = NULL;
        size_t len;
        long entry = -1;
        long long base = bench_live, t0;

        bench_peak = bench_live;
        t0 = now_ns();
        if (btfgen_parse_payload(btfgen_payload, BTFGEN_PAYLOAD_LEN, &x, &err) ||
            btfgen_lookup(&x, argv[1], strlen(argv[1]), argv[2], argv[3], &entry, &via,
                  &err) != BTFGEN_OK ||
            btfgen_blob_of(&x, (uint32_t)entry, &btf, &len, &err)) {
            fprintf(stderr, "lookup: %s\n", err.s ? err.s : "?");
            return 1;
        }
        ns[r] = now_ns() - t0;
        if (bench_peak - base > peak)
            peak = bench_peak - base;
        snprintf(key, sizeof(key), "%s", x.keys[entry]);
        free(btf);
        btfgen_index_free(&x);
        free(err.s);
    }
    qsort(ns, (size_t)runs, sizeof(*ns), cmp_ll);
    printf("key=%s\nmedian_ns=%lld\nmin_ns=%lld\npeak_bytes=%lld\n", key, ns[runs / 2], ns[0],
           peak);
    return 0;
}
"""

RUST_MAIN = r"""
mod btfgen;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

/// The system allocator, counting live bytes and their peak.
struct Counting;

fn add(n: isize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        System.dealloc(p, layout);
        add(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, layout, new);
        if !q.is_null() {
            add(new as isize - layout.size() as isize);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs: usize = args[3].parse().unwrap();
    let (mut ns, mut peak, mut key) = (Vec::new(), 0isize, String::new());
    for _ in 0..runs {
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let t = Instant::now();
        let found = btfgen::lookup_btf(&args[0], &args[1], &args[2]);
        let elapsed = t.elapsed().as_nanos();
        peak = peak.max(PEAK.load(Ordering::Relaxed) - base);
        match found {
            Ok((k, _)) => key = k,
            Err(e) => {
                eprintln!("lookup: {e}");
                std::process::exit(1);
            }
        }
        ns.push(elapsed);
    }
    ns.sort_unstable();
    println!("key={key}\nmedian_ns={}\nmin_ns={}\npeak_bytes={peak}", ns[runs / 2], ns[0]);
}
"""


def _fields(out: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def lookup_inputs(entries: dict[str, bytes]) -> tuple[str, str, str, str]:
    """The middle key, and the os-release, machine and release that find it (the Go
    benchmark's benchInputs)."""
    key = sorted(entries, key=lambda k: k.encode())[len(entries) // 2]
    os_id, version, arch, release = keys.parse_key(key)
    machine = "x86_64" if arch == "x86_64" else "aarch64"
    return key, f'NAME="Bench"\nID="{os_id}"\nVERSION_ID="{version}.9"\n', machine, release


def target_input(arch: str, entries: dict[str, bytes], payload: bytes,
                 stats: pack.PackStats) -> targets.TargetInput:
    """What the pipeline hands the targets, with this arch's payload packed once."""
    payloads, all_stats = {arch: payload}, {arch: stats}
    for other in render.ARCHES:
        if other != arch:
            payloads[other], all_stats[other] = pack.pack(other, {})
    return targets.TargetInput(options=targets.TargetOptions(), payloads=payloads,
                               stats=all_stats, btfs=entries)


def render_target(target: targets.Target, inp: targets.TargetInput, dest: Path) -> None:
    assert target.payload_version == pack.VERSION
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in targets.render_files(target, inp).items():
        (dest / name).write_bytes(data)


def bench_c(inp: targets.TargetInput, inputs: tuple[str, str, str, str], runs: int,
            tmp: Path) -> dict[str, str]:
    src = tmp / "c"
    render_target(c.TARGET, inp, src)
    (src / "bench.c").write_text(C_MAIN)
    exe = src / "bench"
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-I", str(src), str(src / "bench.c"),
                    "-o", str(exe), "-lz"], check=True, capture_output=True, text=True)
    proc = subprocess.run([str(exe), *inputs[1:], str(runs)], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"C bench: {proc.stderr}")
    return _fields(proc.stdout)


def bench_rust(inp: targets.TargetInput, inputs: tuple[str, str, str, str], runs: int,
               tmp: Path) -> dict[str, str]:
    crate = tmp / "rust"
    shutil.copytree(REPO / "tests" / "rusttest", crate)
    toml = crate / "Cargo.toml"
    # A crate and target directory of its own: the tests' shared target directory holds the
    # tests' harness under the test crate's name.
    toml.write_text(toml.read_text().replace("MINIZ_VERSION", cargo.MINIZ)
                    .replace('name = "btfgen-rusttest"', 'name = "btfgen-bench"')
                    .replace('name = "harness"', 'name = "bench"'))
    render_target(rust.TARGET, inp, crate / "src")
    (crate / "src" / "main.rs").write_text(RUST_MAIN)
    target = tmp / "cargo-target"
    cargo.cargo(crate, "build", "--release", extra_env={"CARGO_TARGET_DIR": str(target)})
    exe = target / "release" / "bench"
    proc = subprocess.run([str(exe), *inputs[1:], str(runs)], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"Rust bench: {proc.stderr}")
    return _fields(proc.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernels", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--no-go", action="store_true", help="skip the Go runtime")
    parser.add_argument("--benchtime", default="1s", help="Go: -benchtime")
    parser.add_argument("--count", type=int, default=3, help="Go: -count")
    args = parser.parse_args()
    arch = keys.btfhub_arch(os.uname().machine) or "x86_64"
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} "
          f"({os.cpu_count()} cores)")
    failed = False
    rows: list[tuple[str, float, int, str]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        bases = bench_blobs(arch, tmp)
        entries = payload_entries(args.kernels, arch, bases)
        payload, stats = pack.pack(arch, entries)
        inputs = lookup_inputs(entries)
        inp = target_input(arch, entries, payload, stats)
        print(f"{args.kernels} {arch} kernels: payload version {stats.version}, "
              f"{stats.payload_bytes:,} bytes ({stats.raw_bytes:,} bytes of minimized BTF, "
              f"{stats.nodes} nodes, {stats.raw_kernels} kernels stored whole); looking up "
              f"{inputs[0]}", flush=True)
        for name, bench in (("C", bench_c), ("Rust", bench_rust)):
            out = bench(inp, inputs, args.runs, tmp)
            if out["key"] != inputs[0]:
                raise RuntimeError(f"{name} found {out['key']}, not {inputs[0]}")
            rows.append((name, float(out["median_ns"]), int(out["peak_bytes"]),
                         "peak live heap"))
        if not args.no_go:
            if find_go() is None:
                print("go not found: the Go row is skipped (install Go)", file=sys.stderr)
            else:
                go_rows = run_size(args.kernels, arch, bases, args, tmp)
                ns, b, _ = go_rows["EmbeddedCold"]
                rows.append(("Go", ns, b, "bytes allocated (B/op), spec load included"))
    print(f"\n{'runtime':<8} {'first lookup ns':>16} {'heap bytes':>12}  heap is")
    for name, ns, heap, what in rows:
        ok = ns <= MAX_NS and heap <= MAX_BYTES
        failed |= not ok
        print(f"{name:<8} {ns:>16,.0f} {heap:>12,}  {what}; "
              f"{'meets' if ok else 'MISSES'} 5 ms and 2 MB")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
