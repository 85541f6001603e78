package btfgen

// BTFOptions.PreferEmbedded: the embedded BTF on a kernel whose own BTF file is byte-identical
// to the full BTF the payload's trailer records (tests/test_go_runtime.py writes that full BTF
// to testdata/full.btf and records its checksum for every key); any other file falls back.

import (
	"os"
	"path/filepath"
	"testing"
)

func TestPreferEmbedded(t *testing.T) {
	key, osRelease := someKey(t)
	fakeHost(t, &testVectors{OSReleases: map[string]string{"x": osRelease}}, testVector{
		Files: map[string]string{"etc/os-release": "x"}, Release: btfgenKeyPart(key, 3),
	})
	full, err := os.ReadFile(filepath.Join("testdata", "full.btf"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := btfgenEmbeddedFullSums()[key]; !ok {
		t.Fatalf("the payload's trailer has no full-BTF checksum for %s", key)
	}
	old := btfgenNativePath
	t.Cleanup(func() { btfgenNativePath = old })
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	flipped := append([]byte(nil), full...)
	flipped[len(flipped)/2] ^= 1
	cases := []struct {
		name, path, want string
	}{
		{"identical", write("same", full), "embedded"},
		{"one byte differs", write("flipped", flipped), "kernel"},
		{"truncated", write("short", full[:len(full)-1]), "kernel"},
		{"one byte longer", write("long", append(append([]byte(nil), full...), 0)), "kernel"},
		{"empty", write("empty", nil), "kernel"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			btfgenNativePath = c.path
			res, err := FindBTF(BTFOptions{PreferEmbedded: true})
			if err != nil || res.Source != c.want {
				t.Fatalf("got %v, %v; want %s", res, err, c.want)
			}
			if c.want == "embedded" && (res.Key != key || res.Spec == nil) {
				t.Fatalf("got %v; want the embedded spec of %s", res, key)
			}
			if c.want == "kernel" && res.Spec != nil {
				t.Fatalf("fallback must leave the kernel's BTF to cilium/ebpf, got a spec")
			}
			// Without the opt-in, an identical file changes nothing.
			res, err = FindBTF(BTFOptions{})
			if err != nil || res.Source != "kernel" {
				t.Fatalf("without PreferEmbedded: got %v, %v; want kernel", res, err)
			}
		})
	}
	// A kernel the payload lacks falls back too.
	btfgenNativePath = cases[0].path
	fakeHost(t, &testVectors{OSReleases: map[string]string{"x": osRelease}}, testVector{
		Files: map[string]string{"etc/os-release": "x"}, Release: "0.0.0-not-embedded",
	})
	res, err := FindBTF(BTFOptions{PreferEmbedded: true})
	if err != nil || res.Source != "kernel" {
		t.Fatalf("kernel not embedded: got %v, %v; want kernel", res, err)
	}
}

func TestParseFullSumsRejectsDamage(t *testing.T) {
	if len(btfgenPayload) == 0 {
		t.Skip("this GOARCH embeds no payload")
	}
	good := btfgenParseFullSums(btfgenPayload)
	if len(good) == 0 {
		t.Fatal("no full-BTF trailer in the test payload")
	}
	n := len(btfgenPayload)
	for cut := 1; cut < 60 && cut < n; cut++ {
		damaged := append([]byte(nil), btfgenPayload[:n-cut]...)
		if got := btfgenParseFullSums(damaged); got != nil {
			t.Fatalf("payload cut by %d bytes: trailer parsed as %d sums", cut, len(got))
		}
	}
	huge := append([]byte(nil), btfgenPayload...)
	huge[n-8], huge[n-7], huge[n-6], huge[n-5] = 0xff, 0xff, 0xff, 0x7f
	if got := btfgenParseFullSums(huge); got != nil {
		t.Fatal("a body length past the payload parsed")
	}
}
