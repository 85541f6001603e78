package btfgen

// BTFOptions.PreferEmbedded: the embedded BTF on a kernel whose own BTF file is byte-identical
// to the full BTF the payload's trailer records (tests/test_go_runtime.py writes that full BTF
// to testdata/full.btf and records its checksum for every key); any other file, and any
// trailer that does not read exactly, falls back to the kernel's own BTF.

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// preferHost points the runtime at a host whose os-release and release find key, and returns
// the full BTF the trailer records and a function that writes a file to use as the kernel's
// /sys/kernel/btf/vmlinux.
func preferHost(t *testing.T) (key string, full []byte, native func(name string, data []byte)) {
	t.Helper()
	key, osRelease := someKey(t)
	fakeHost(t, &testVectors{OSReleases: map[string]string{"x": osRelease}}, testVector{
		Files: map[string]string{"etc/os-release": "x"}, Release: btfgenKeyPart(key, 3),
	})
	full, err := os.ReadFile(filepath.Join("testdata", "full.btf"))
	if err != nil {
		t.Fatal(err)
	}
	old := btfgenNativePath
	t.Cleanup(func() { btfgenNativePath = old })
	dir := t.TempDir()
	return key, full, func(name string, data []byte) {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		btfgenNativePath = path
	}
}

// withPayload makes the runtime read payload instead of the embedded one, for one test.
func withPayload(t *testing.T, payload []byte) {
	t.Helper()
	old := btfgenPayload
	btfgenPayload, btfgenIndexOnce = payload, sync.Once{}
	t.Cleanup(func() { btfgenPayload, btfgenIndexOnce = old, sync.Once{} })
}

func TestPreferEmbedded(t *testing.T) {
	key, full, native := preferHost(t)
	x, err := btfgenEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := btfgenFullSumOf(x.data, len(x.keys), x.find(key)); !ok || err != nil {
		t.Fatalf("the payload's trailer has no full-BTF checksum for %s (%v)", key, err)
	}
	flipped := append([]byte(nil), full...)
	flipped[len(flipped)/2] ^= 1
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"identical", full, "embedded"},
		{"one byte differs", flipped, "kernel"},
		{"truncated", full[:len(full)-1], "kernel"},
		{"one byte longer", append(append([]byte(nil), full...), 0), "kernel"},
		{"empty", nil, "kernel"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			native(c.name, c.data)
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
	native("identical", full)
	fakeHost(t, &testVectors{OSReleases: map[string]string{"x": "ID=x\n"}}, testVector{
		Files: map[string]string{"etc/os-release": "x"}, Release: "0.0.0-not-embedded",
	})
	res, err := FindBTF(BTFOptions{PreferEmbedded: true})
	if err != nil || res.Source != "kernel" {
		t.Fatalf("kernel not embedded: got %v, %v; want kernel", res, err)
	}
}

// TestFileMatchesComparesTheHashPrefix: the trailer keeps the first btfgenSumLen bytes of the
// sha256; a file matches when its size and exactly those bytes agree.
func TestFileMatchesComparesTheHashPrefix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vmlinux")
	data := []byte("not parsed, only hashed")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	want := btfgenFullSum{size: uint32(len(data)), sum: string(sum[:btfgenSumLen])}
	if !btfgenFileMatches(path, want) {
		t.Fatal("the file's own size and hash prefix do not match")
	}
	for i := 0; i < btfgenSumLen; i++ {
		bad := []byte(want.sum)
		bad[i] ^= 0x80
		if btfgenFileMatches(path, btfgenFullSum{size: want.size, sum: string(bad)}) {
			t.Fatalf("hash prefix differing in byte %d matched", i)
		}
	}
	if btfgenFileMatches(path, btfgenFullSum{size: want.size, sum: string(sum[:])}) {
		t.Fatal("a whole sha256 where the prefix belongs matched")
	}
	for _, size := range []uint32{0, want.size - 1, want.size + 1} {
		if btfgenFileMatches(path, btfgenFullSum{size: size, sum: want.sum}) {
			t.Fatalf("size %d matched a file of %d bytes", size, len(data))
		}
	}
	if btfgenFileMatches(filepath.Join(t.TempDir(), "missing"), want) {
		t.Fatal("a missing file matched")
	}
}

// The trailer written by hand from its description (gobtfgen's docs/payload-format.md, "The
// full-BTF trailer"), so that damaged variants can be made.

func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// sumColumns are the hash column and the size column (the count, then the size deltas) of one
// checksum per entry, size 0 for none.
func sumColumns(sums []btfgenFullSum) (hashes, sizes []byte) {
	sizes = appendVarint(nil, uint64(len(sums)))
	prev := uint32(0)
	for _, s := range sums {
		d := int32(s.size - prev)
		sizes = appendVarint(sizes, uint64(uint32(d<<1^d>>31)))
		prev = s.size
		if s.size == 0 {
			hashes = append(hashes, make([]byte, btfgenSumLen)...)
		} else {
			hashes = append(hashes, s.sum...)
		}
	}
	return hashes, sizes
}

// sumTrailer is the two columns and the tail: u32 sizes_len, u32 crc32 of both, "GBS2".
func sumTrailer(hashes, sizes []byte) []byte {
	out := append(append([]byte(nil), hashes...), sizes...)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(sizes)))
	out = binary.LittleEndian.AppendUint32(out,
		crc32.Update(crc32.ChecksumIEEE(hashes), crc32.IEEETable, sizes))
	return append(out, btfgenSumMagic...)
}

// allSums reads the checksum of every entry of data's trailer.
func allSums(t *testing.T, data []byte, entries int) []btfgenFullSum {
	t.Helper()
	sums := make([]btfgenFullSum, entries)
	for e := range sums {
		sum, ok, err := btfgenFullSumOf(data, entries, e)
		if err != nil || !ok {
			t.Fatalf("entry %d: %v, %v", e, ok, err)
		}
		sums[e] = sum
	}
	return sums
}

// TestFullSumTrailerDamage replaces the trailer of the embedded payload with variants written
// by hand: the right ones give the embedded BTF through FindBTF; every damaged one an error
// from the trailer reader and the kernel's own BTF from FindBTF, while the payload itself still
// reads (LookupBTF finds the key).
func TestFullSumTrailerDamage(t *testing.T) {
	key, full, native := preferHost(t)
	native("vmlinux", full)
	x, err := btfgenEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	entry, entries := x.find(key), len(x.keys)
	sums := allSums(t, x.data, entries)
	hashes, sizes := sumColumns(sums)
	// Every key's checksum names testdata/full.btf: the count is one byte and the deltas after
	// the first are single zero bytes, which the variants below cut and extend.
	if entries < 2 || entries >= 0x80 || sizes[len(sizes)-1] != 0 {
		t.Fatalf("%d entries, size column % x: not the test payload", entries, sizes)
	}
	bare := btfgenPayload[:len(btfgenPayload)-len(sumTrailer(hashes, sizes))]
	if !bytes.Equal(append(append([]byte(nil), bare...), sumTrailer(hashes, sizes)...),
		btfgenPayload) {
		t.Fatal("the trailer written here from the docs differs from gobtfgen's")
	}
	gbs1, err := os.ReadFile(filepath.Join("testdata", "gbs1_"+btfgenPayloadArch+".payload"))
	if err != nil {
		t.Fatal(err)
	}
	with := func(trailer []byte) []byte { return append(append([]byte(nil), bare...), trailer...) }
	edit := func(f func(s []btfgenFullSum) []btfgenFullSum) []byte {
		return with(sumTrailer(sumColumns(f(append([]btfgenFullSum(nil), sums...)))))
	}
	tail := func(f func(tail []byte)) []byte {
		p := with(sumTrailer(hashes, sizes))
		f(p[len(p)-btfgenSumTailLen:])
		return p
	}
	// sizes with the count of entries and then one varint per entry replaced by v
	sizesWith := func(v ...byte) []byte {
		return append(appendVarint(nil, uint64(entries)), v...)
	}
	zeros := make([]byte, entries*btfgenSumLen)
	cases := []struct {
		name    string
		payload []byte
		want    string // "embedded", "none" (no trailer), "error: <what it says>", or why "kernel"
	}{
		{"as gobtfgen wrote it", btfgenPayload, "embedded"},
		{"only this kernel has a checksum", edit(func(s []btfgenFullSum) []btfgenFullSum {
			for e := range s {
				if e != entry {
					s[e] = btfgenFullSum{}
				}
			}
			return s
		}), "embedded"},
		{"no trailer", bare, "none"},
		{"GBS1 trailer of an older gobtfgen", gbs1, "none"},
		{"a byte after the trailer", append(with(sumTrailer(hashes, sizes)), 0), "none"},
		{"no checksum for this kernel", edit(func(s []btfgenFullSum) []btfgenFullSum {
			s[entry] = btfgenFullSum{}
			return s
		}), "no checksum"},
		{"hash prefix differs", edit(func(s []btfgenFullSum) []btfgenFullSum {
			b := []byte(s[entry].sum)
			b[btfgenSumLen-1] ^= 1
			s[entry].sum = string(b)
			return s
		}), "no match"},
		{"size differs", edit(func(s []btfgenFullSum) []btfgenFullSum {
			s[entry].size++
			return s
		}), "no match"},
		{"one entry more than the payload", edit(func(s []btfgenFullSum) []btfgenFullSum {
			return append(s, s[0])
		}), "error: checksum"},
		{"one entry fewer than the payload", edit(func(s []btfgenFullSum) []btfgenFullSum {
			return s[:len(s)-1]
		}), "error: checksum"},
		// The columns the reader takes for this payload, with a count of one entry more or
		// fewer (written whole for that many entries, the crc32 fails first).
		{"count one more than the entries", with(sumTrailer(hashes,
			append(appendVarint(nil, uint64(entries+1)), append(sizes[1:len(sizes):len(sizes)],
				0)...))), "error: entries, the payload has"},
		{"count one less than the entries", with(sumTrailer(hashes,
			append(appendVarint(nil, uint64(entries-1)), sizes[1:len(sizes)-1]...))),
			"error: entries, the payload has"},
		{"count varint over 32 bits", with(sumTrailer(zeros,
			[]byte{0x80, 0x80, 0x80, 0x80, 0x10})), "error: over 32 bits"},
		{"size varint over 32 bits", with(sumTrailer(zeros,
			sizesWith(0xff, 0xff, 0xff, 0xff, 0x7f))), "error: over 32 bits"},
		{"size varint cut at the end", with(sumTrailer(hashes,
			append(sizes[:len(sizes)-1:len(sizes)-1], 0x80))), "error: truncated"},
		{"a size missing", with(sumTrailer(hashes, sizes[:len(sizes)-1])), "error: truncated"},
		{"a byte after the sizes", with(sumTrailer(hashes, append(sizes[:len(sizes):len(sizes)],
			0))), "error: bytes after the sizes"},
		{"a hash missing", with(sumTrailer(hashes[btfgenSumLen:], sizes)), "error: checksum"},
		{"no sizes", with(sumTrailer(hashes, nil)), "error: truncated"},
		{"checksum", tail(func(b []byte) { b[4] ^= 1 }), "error: checksum"},
		{"sizes length one more", tail(func(b []byte) { b[0]++ }), "error: checksum"},
		{"sizes length one less", tail(func(b []byte) { b[0]-- }), "error: checksum"},
		{"sizes length past the payload", tail(func(b []byte) {
			binary.LittleEndian.PutUint32(b, 0xffffffff)
		}), "error: out of range"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			withPayload(t, c.payload)
			x, err := btfgenEmbedded()
			if err != nil {
				t.Fatalf("the payload itself no longer reads: %v", err)
			}
			if _, got, err := LookupBTF(hostOSRelease(t), btfgenMachine(),
				btfgenKeyPart(key, 3)); err != nil || got != key {
				t.Fatalf("LookupBTF: %s, %v", got, err)
			}
			_, ok, err := btfgenFullSumOf(x.data, len(x.keys), entry)
			switch {
			case strings.HasPrefix(c.want, "error: "):
				if err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(c.want, "error: ")) {
					t.Fatalf("error %v, want one about %q (ok %v)", err, c.want[7:], ok)
				}
			case c.want == "none" || c.want == "no checksum":
				if err != nil || ok {
					t.Fatalf("want no checksum, got %v, %v", ok, err)
				}
			default:
				if err != nil || !ok {
					t.Fatalf("want a checksum, got %v, %v", ok, err)
				}
			}
			want := "kernel"
			if c.want == "embedded" {
				want = "embedded"
			}
			res, err := FindBTF(BTFOptions{PreferEmbedded: true})
			if err != nil || res.Source != want || (want == "kernel") != (res.Spec == nil) {
				t.Fatalf("FindBTF: %v, %v; want %s", res, err, want)
			}
		})
	}
}

func hostOSRelease(t *testing.T) string {
	t.Helper()
	text, err := btfgenReadOSRelease(os.Getenv(btfgenHostRootEnv))
	if err != nil {
		t.Fatal(err)
	}
	return text
}

// TestFullSumOfRejectsDamage cuts the embedded payload's trailer short and flips each of its
// bits: never a checksum other than the one written.
func TestFullSumOfRejectsDamage(t *testing.T) {
	if len(btfgenPayload) == 0 {
		t.Skip("this GOARCH embeds no payload")
	}
	x, err := btfgenEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	entries := len(x.keys)
	good := allSums(t, x.data, entries)
	hashes, sizes := sumColumns(good)
	size := len(sumTrailer(hashes, sizes))
	n := len(x.data)
	for e := range good {
		// Cut anywhere: the magic is gone (no trailer) or what is left does not read.
		for cut := 1; cut < n; cut++ {
			if _, ok, _ := btfgenFullSumOf(x.data[:n-cut], entries, e); ok {
				t.Fatalf("entry %d, data cut by %d bytes: a checksum", e, cut)
			}
		}
		// Flip any bit before the magic: an error (the crc32 covers both columns).
		for i := n - size; i < n-4; i++ {
			for bit := 0; bit < 8; bit++ {
				data := append([]byte(nil), x.data...)
				data[i] ^= 1 << bit
				if _, _, err := btfgenFullSumOf(data, entries, e); err == nil {
					t.Fatalf("entry %d, byte %d bit %d flipped: no error", e, i-(n-size), bit)
				}
			}
		}
	}
	// The same trailer read for a payload of another number of entries.
	for _, other := range []int{0, entries - 1, entries + 1} {
		if _, _, err := btfgenFullSumOf(x.data, other, 0); err == nil {
			t.Fatalf("a trailer of %d entries read for a payload of %d", entries, other)
		}
	}
	if _, ok, err := btfgenFullSumOf(x.data, entries, entries); ok || err != nil {
		t.Fatalf("an entry past the payload's: %v, %v", ok, err)
	}
}
