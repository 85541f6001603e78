package btfgen

// Fuzz targets for the two parsers that read untrusted bytes: the payload reader and the
// os-release parser with the lookup behind it. tests/test_go_runtime.py runs each for a few
// seconds; testdata/fuzz holds their seed corpora.

import (
	"hash/crc32"
	"os"
	"strings"
	"testing"
)

func FuzzPayload(f *testing.F) {
	for _, name := range []string{"btfgen_x86_64.payload", "btfgen_arm64.payload"} {
		if raw, err := os.ReadFile(name); err == nil {
			f.Add(raw)
		}
	}
	f.Add([]byte{})
	f.Add([]byte("GBTF\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// The full-BTF trailer is read from the end of whatever precedes it.
		for _, entries := range []int{1, 3, 64} {
			if sum, ok, err := btfgenFullSumOf(data, entries, entries-1); ok &&
				(err != nil || sum.size == 0 || len(sum.sum) != btfgenSumLen) {
				t.Fatalf("checksum %+v, %v", sum, err)
			}
		}
		x, err := btfgenParsePayload(data)
		if err != nil {
			return
		}
		for i := range x.keys {
			if i == 64 {
				break
			}
			if i > 0 && x.keys[i-1] >= x.keys[i] {
				t.Fatalf("keys not sorted: %q >= %q", x.keys[i-1], x.keys[i])
			}
			_, _, _ = btfgenFullSumOf(x.data, len(x.keys), i)
			if blob, err := x.blob(i); err == nil {
				if crc32.ChecksumIEEE(blob) != x.kernels[x.entryKernel[i]].crc {
					t.Fatalf("blob %d handed out with a wrong checksum", i)
				}
				_, _ = x.spec(i)
			}
		}
		if len(x.keys) > 0 {
			key := x.keys[0]
			x.lookup("ID="+btfgenKeyPart(key, 0)+"\nVERSION_ID="+btfgenKeyPart(key, 1),
				btfgenKeyPart(key, 2), btfgenKeyPart(key, 3))
		}
	})
}

func FuzzOSRelease(f *testing.F) {
	f.Add("ID=ubuntu\nVERSION_ID=\"18.04\"\n", "x86_64", "4.15.0-1054-aws")
	f.Add("ID=\"rhel\"\r\nVERSION_ID=\"8.4\"\r\n", "aarch64", "4.18.0-305.el8.aarch64")
	f.Add("ID='ol\nVERSION_ID=7\\.9 # x\n", "x86_64", "4.14.35-2047.510.5.5.el7uek.x86_64")
	f.Add("ID=amzn\nVERSION_ID=\"2018.03\"\nID_LIKE=\"rhel fedora\"", "x86_64", "4.14.106-79.86.amzn1.x86_64")
	f.Add("\x00=\n=\"\\", "s390x", "")
	f.Fuzz(func(t *testing.T, text, machine, release string) {
		osr := btfgenNewOSRelease(text)
		if strings.IndexFunc(osr.id, func(r rune) bool { return 'A' <= r && r <= 'Z' }) >= 0 {
			t.Fatalf("ID %q not lowered", osr.id)
		}
		for _, v := range btfgenVersionCandidates(osr.id, osr.versionID) {
			if v == "" || strings.Contains(v, "/") {
				t.Fatalf("version candidate %q", v)
			}
		}
		btfgenMarkers(release)
		x, err := btfgenEmbedded()
		if err != nil {
			t.Fatal(err)
		}
		entry, via, err := x.lookup(text, machine, release)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		key := x.keys[entry]
		if btfgenKeyPart(key, 3) != release || btfgenKeyPart(key, 2) != btfgenBTFHubArch(machine) {
			t.Fatalf("%s via %s for machine %q release %q", key, via, machine, release)
		}
		if via == "distro" && btfgenKeyPart(key, 0) != osr.id {
			t.Fatalf("%s via distro for ID %q", key, osr.id)
		}
	})
}
