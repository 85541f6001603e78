package btfgen

// BTFOptions.PreferEmbedded: the embedded BTF on a kernel whose own BTF file is byte-identical
// to the full BTF the payload's trailer records (tests/test_go_runtime.py writes that full BTF
// to testdata/full.btf and records its checksum for every key); any other file, and any
// trailer that does not read exactly, falls back to the kernel's own BTF.

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"reflect"
	"sort"
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
	sums, err := btfgenParseFullSums(x.data, len(x.keys))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := sums[x.find(key)]; !ok {
		t.Fatalf("the payload's trailer has no full-BTF checksum for %s", key)
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

type sumRecord struct {
	entry int
	size  uint32
	sum   string
}

// sumVarints is what the trailer deflates: the count, the entry gaps, the size deltas.
func sumVarints(records []sumRecord) []byte {
	b := appendVarint(nil, uint64(len(records)))
	prev := -1
	for _, r := range records {
		b = appendVarint(b, uint64(r.entry-prev-1))
		prev = r.entry
	}
	size := uint32(0)
	for _, r := range records {
		d := int32(r.size - size)
		b = appendVarint(b, uint64(uint32(d<<1^d>>31)))
		size = r.size
	}
	return b
}

func sumHashes(records []sumRecord) []byte {
	var b []byte
	for _, r := range records {
		b = append(b, r.sum...)
	}
	return b
}

// sumTrailer is the hash column, the deflated varints and the tail: u32 varints_clen,
// u32 varints_len, u32 crc32 of the hashes and the varints, "GBS2".
func sumTrailer(t *testing.T, hashes, varints []byte) []byte {
	t.Helper()
	var z bytes.Buffer
	w, err := flate.NewWriter(&z, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(varints); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	out := append(append([]byte(nil), hashes...), z.Bytes()...)
	out = binary.LittleEndian.AppendUint32(out, uint32(z.Len()))
	out = binary.LittleEndian.AppendUint32(out, uint32(len(varints)))
	crc := crc32.Update(crc32.ChecksumIEEE(hashes), crc32.IEEETable, varints)
	out = binary.LittleEndian.AppendUint32(out, crc)
	return append(out, btfgenSumMagic...)
}

func recordsTrailer(t *testing.T, records []sumRecord) []byte {
	t.Helper()
	return sumTrailer(t, sumHashes(records), sumVarints(records))
}

// withoutTrailer is the payload gobtfgen wrote, cut before its full-BTF trailer of records
// records.
func withoutTrailer(t *testing.T, payload []byte, records int) []byte {
	t.Helper()
	n := len(payload)
	if n < btfgenSumTailLen || string(payload[n-4:]) != btfgenSumMagic {
		t.Fatal("the test payload has no full-BTF trailer")
	}
	clen := int(binary.LittleEndian.Uint32(payload[n-btfgenSumTailLen:]))
	return payload[:n-btfgenSumTailLen-clen-records*btfgenSumLen]
}

// TestFullSumTrailerDamage replaces the trailer of the embedded payload with variants written
// by hand: the right one gives the embedded BTF through FindBTF, every damaged one an error
// from the trailer reader and the kernel's own BTF from FindBTF, while the payload itself still
// reads (LookupBTF finds the key).
func TestFullSumTrailerDamage(t *testing.T) {
	key, full, native := preferHost(t)
	native("vmlinux", full)
	x, err := btfgenEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	sums, err := btfgenParseFullSums(x.data, len(x.keys))
	if err != nil || len(sums) != len(x.keys) {
		t.Fatalf("%d sums for %d keys, %v", len(sums), len(x.keys), err)
	}
	entry, entries := x.find(key), len(x.keys)
	var records []sumRecord
	for e, s := range sums {
		records = append(records, sumRecord{e, s.size, s.sum})
	}
	sort.Slice(records, func(i, j int) bool { return records[i].entry < records[j].entry })
	bare := withoutTrailer(t, btfgenPayload, len(records))
	gbs1, err := os.ReadFile(filepath.Join("testdata", "gbs1_"+btfgenPayloadArch+".payload"))
	if err != nil {
		t.Fatal(err)
	}
	with := func(trailer []byte) []byte { return append(append([]byte(nil), bare...), trailer...) }
	edit := func(f func(r []sumRecord) []sumRecord) []byte {
		return with(recordsTrailer(t, f(append([]sumRecord(nil), records...))))
	}
	tail := func(f func(tail []byte)) []byte {
		p := with(recordsTrailer(t, records))
		f(p[len(p)-btfgenSumTailLen:])
		return p
	}
	zeros := make([]byte, btfgenSumLen)
	cases := []struct {
		name    string
		payload []byte
		want    string // "embedded", "none" (no trailer, no error), "error", or a reason for "kernel"
	}{
		{"as gobtfgen wrote it", btfgenPayload, "embedded"},
		{"written by hand", with(recordsTrailer(t, records)), "embedded"},
		{"only this kernel's record", edit(func(r []sumRecord) []sumRecord {
			return []sumRecord{r[entry]}
		}), "embedded"},
		{"no trailer", bare, "none"},
		{"GBS1 trailer of an older gobtfgen", gbs1, "none"},
		{"a byte after the trailer", append(with(recordsTrailer(t, records)), 0), "none"},
		{"no record for this kernel", edit(func(r []sumRecord) []sumRecord {
			return append(r[:entry], r[entry+1:]...)
		}), "no record"},
		{"hash prefix differs", edit(func(r []sumRecord) []sumRecord {
			b := []byte(r[entry].sum)
			b[btfgenSumLen-1] ^= 1
			r[entry].sum = string(b)
			return r
		}), "no match"},
		{"size differs", edit(func(r []sumRecord) []sumRecord {
			r[entry].size++
			return r
		}), "no match"},
		{"entry out of range", edit(func(r []sumRecord) []sumRecord {
			return append(r, sumRecord{entries, 1, r[0].sum})
		}), "error"},
		{"more records than entries", edit(func(r []sumRecord) []sumRecord {
			for len(r) <= entries {
				r = append(r, sumRecord{len(r), 1, r[0].sum})
			}
			return r
		}), "error"},
		{"entry varint over 32 bits", with(sumTrailer(t, zeros,
			[]byte{1, 0x80, 0x80, 0x80, 0x80, 0x10, 0x30})), "error"},
		{"size varint over 32 bits", with(sumTrailer(t, zeros,
			[]byte{1, 0, 0xff, 0xff, 0xff, 0xff, 0x7f})), "error"},
		{"size varint cut at the end", with(sumTrailer(t, zeros, []byte{1, 0, 0x80})), "error"},
		{"a byte after the sizes", with(sumTrailer(t, sumHashes(records),
			append(sumVarints(records), 0))), "error"},
		{"a hash missing", with(sumTrailer(t, sumHashes(records[1:]), sumVarints(records))),
			"error"},
		{"no varints", with(sumTrailer(t, nil, nil)), "error"},
		{"checksum", tail(func(b []byte) { b[8] ^= 1 }), "error"},
		{"varints length one more", tail(func(b []byte) { b[4]++ }), "error"},
		{"varints length one less", tail(func(b []byte) { b[4]-- }), "error"},
		{"compressed length one less", tail(func(b []byte) { b[0]-- }), "error"},
		{"compressed length past the payload", tail(func(b []byte) {
			binary.LittleEndian.PutUint32(b, 0xffffffff)
		}), "error"},
		{"varints length beyond DEFLATE's ratio", tail(func(b []byte) {
			binary.LittleEndian.PutUint32(b[4:], 0x7fffffff)
		}), "error"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			withPayload(t, c.payload)
			x, err := btfgenEmbedded()
			if err != nil {
				t.Fatalf("the payload itself no longer reads: %v", err)
			}
			if _, got, err := LookupBTF(btfgenReadOSReleaseForTest(t), btfgenMachine(),
				btfgenKeyPart(key, 3)); err != nil || got != key {
				t.Fatalf("LookupBTF: %s, %v", got, err)
			}
			sums, err := btfgenParseFullSums(x.data, len(x.keys))
			switch c.want {
			case "error":
				if err == nil {
					t.Fatalf("no error; read %d sums", len(sums))
				}
			case "none":
				if err != nil || sums != nil {
					t.Fatalf("want no trailer, got %d sums, %v", len(sums), err)
				}
			default:
				if err != nil {
					t.Fatal(err)
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

func btfgenReadOSReleaseForTest(t *testing.T) string {
	t.Helper()
	text, err := btfgenReadOSRelease(os.Getenv(btfgenHostRootEnv))
	if err != nil {
		t.Fatal(err)
	}
	return text
}

func TestParseFullSumsRejectsDamage(t *testing.T) {
	if len(btfgenPayload) == 0 {
		t.Skip("this GOARCH embeds no payload")
	}
	x, err := btfgenEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	entries := len(x.keys)
	good, err := btfgenParseFullSums(x.data, entries)
	if err != nil || len(good) == 0 {
		t.Fatalf("no full-BTF trailer in the test payload (%v)", err)
	}
	// Cut anywhere: the magic is gone (no trailer) or what is left does not read.
	n := len(x.data)
	for cut := 1; cut < n; cut++ {
		if got, _ := btfgenParseFullSums(x.data[:n-cut], entries); got != nil {
			t.Fatalf("data cut by %d bytes: trailer parsed as %d sums", cut, len(got))
		}
	}
	// Flip any bit of the trailer before its magic: an error, never other sums. Every bit of
	// the hash column and of the tail counts; DEFLATE may not read every bit of its stream
	// (the last byte's padding, what follows the bytes asked for), so there the sums may stay.
	clen := int(binary.LittleEndian.Uint32(x.data[n-btfgenSumTailLen:]))
	stream := n - btfgenSumTailLen - clen
	for i := stream - len(good)*btfgenSumLen; i < n-4; i++ {
		for bit := 0; bit < 8; bit++ {
			data := append([]byte(nil), x.data...)
			data[i] ^= 1 << bit
			got, err := btfgenParseFullSums(data, entries)
			if err == nil && (i < stream || i >= n-btfgenSumTailLen || !reflect.DeepEqual(got, good)) {
				t.Fatalf("byte %d bit %d flipped: no error", i, bit)
			}
		}
	}
	// The same trailer read for a payload of fewer entries names entries it does not have.
	if _, err := btfgenParseFullSums(x.data, entries-1); err == nil {
		t.Fatal("a trailer naming more entries than the payload has parsed")
	}
}
