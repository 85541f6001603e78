package btfgen

// Benchmarks of the two paths a program takes at start-up. benchmarks/bench_go_runtime.py
// runs them against payloads of 50 and 2000 kernels and prints ns/op and B/op.

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// BenchmarkNative is FindBTF on a kernel with BTF: one getenv and one stat.
func BenchmarkNative(b *testing.B) {
	if _, err := os.Stat(btfgenNativePath); err != nil {
		native := filepath.Join(b.TempDir(), "vmlinux")
		if err := os.WriteFile(native, nil, 0o644); err != nil {
			b.Fatal(err)
		}
		old := btfgenNativePath
		btfgenNativePath = native
		b.Cleanup(func() { btfgenNativePath = old })
	}
	b.Setenv(btfgenOverrideEnv, "")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := FindBTF(BTFOptions{})
		if err != nil || res.Source != "kernel" {
			b.Fatal(res, err)
		}
	}
}

// benchInputs picks the kernel in the middle of the payload, with the os-release of a host
// whose VERSION_ID has a minor the archive cuts (the common RHEL/OL case: two candidates).
func benchInputs(b *testing.B, x *btfgenIndex) (string, string, string) {
	if len(x.keys) == 0 {
		b.Skip("this GOARCH embeds no BTF")
	}
	key := x.keys[len(x.keys)/2]
	osRelease := "NAME=\"Bench\"\nID=\"" + btfgenKeyPart(key, 0) + "\"\nVERSION_ID=\"" +
		btfgenKeyPart(key, 1) + ".9\"\n"
	return osRelease, btfgenMachine(), btfgenKeyPart(key, 3)
}

// BenchmarkEmbeddedCold is what the first FindBTF of a process costs on a kernel without
// BTF: parse the payload index, look the kernel up, inflate its chunk, load the spec.
func BenchmarkEmbeddedCold(b *testing.B) {
	x, err := btfgenParsePayload(btfgenPayload)
	if err != nil {
		b.Fatal(err)
	}
	osRelease, machine, release := benchInputs(b, x)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		x, err := btfgenParsePayload(btfgenPayload)
		if err != nil {
			b.Fatal(err)
		}
		entry, _, err := x.lookup(osRelease, machine, release)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := x.spec(entry); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEmbeddedWarm is LookupBTF with the index already parsed (later calls).
func BenchmarkEmbeddedWarm(b *testing.B) {
	x, err := btfgenEmbedded()
	if err != nil {
		b.Fatal(err)
	}
	osRelease, machine, release := benchInputs(b, x)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := LookupBTF(osRelease, machine, release); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFindBTFCold is a whole first FindBTF of a process on a kernel without BTF, file
// reads included: os-release from $HOST_ROOT, the release from /proc, the payload index
// parsed anew every time.
func BenchmarkFindBTFCold(b *testing.B) {
	x, err := btfgenParsePayload(btfgenPayload)
	if err != nil {
		b.Fatal(err)
	}
	osRelease, _, release := benchInputs(b, x)
	root := b.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "os-release"), []byte(osRelease), 0o644); err != nil {
		b.Fatal(err)
	}
	releaseFile := filepath.Join(root, "osrelease")
	if err := os.WriteFile(releaseFile, []byte(release+"\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	old := btfgenReleasePath
	btfgenReleasePath = releaseFile
	b.Cleanup(func() { btfgenReleasePath = old })
	b.Setenv(btfgenHostRootEnv, root)
	b.Setenv(btfgenOverrideEnv, "")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		btfgenIndexOnce = sync.Once{} // forget the parsed index: every iteration is a first call
		res, err := FindBTF(BTFOptions{IgnoreNative: true})
		if err != nil || res.Source != "embedded" {
			b.Fatal(res, err)
		}
	}
}
