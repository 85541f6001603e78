package btfgen

// Tests of the generated runtime, copied next to the generated code by
// tests/test_go_runtime.py together with testdata/lookup.json (the shared vectors, also read
// by the Python tests) and payloads built from it with one small BTF per key.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
)

type testVector struct {
	Name    string            `json:"name"`
	Files   map[string]string `json:"files"`
	Links   map[string]string `json:"links"`
	Machine string            `json:"machine"`
	Release string            `json:"release"`
	Parsed  *struct {
		ID         string   `json:"id"`
		VersionID  string   `json:"version_id"`
		IDLike     []string `json:"id_like"`
		PrettyName *string  `json:"pretty_name"`
	} `json:"parsed"`
	Expect struct {
		Key      string   `json:"key"`
		Via      string   `json:"via"`
		Error    string   `json:"error"`
		Contains []string `json:"contains"`
	} `json:"expect"`
}

type testVectors struct {
	OSReleases map[string]string   `json:"os_releases"`
	Payload    map[string][]string `json:"payload"`
	SameBTF    [][]string          `json:"same_btf"`
	Vectors    []testVector        `json:"vectors"`
}

func loadVectors(t testing.TB) *testVectors {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "lookup.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v testVectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	return &v
}

// osReleaseText is what the runtime reads for a vector: /etc/os-release (or the file its
// link points to; every link in the vectors points to /usr/lib/os-release), else
// /usr/lib/os-release, else nothing.
func (vs *testVectors) osReleaseText(v testVector) string {
	if name, ok := v.Files["etc/os-release"]; ok {
		return vs.OSReleases[name]
	}
	if name, ok := v.Files["usr/lib/os-release"]; ok {
		return vs.OSReleases[name]
	}
	return ""
}

var labelRe = regexp.MustCompile(`[^A-Za-z0-9_]`)

// label is the struct name in a key's blob (tests/tinybtf.py).
func (vs *testVectors) label(key string) string {
	for _, group := range vs.SameBTF {
		for _, k := range group {
			if k == key {
				key = group[0]
			}
		}
	}
	return "k_" + labelRe.ReplaceAllString(key, "_")
}

func loadIndex(t testing.TB, arch string) *btfgenIndex {
	t.Helper()
	raw, err := os.ReadFile("btfgen_" + arch + ".payload")
	if err != nil {
		t.Fatal(err)
	}
	x, err := btfgenParsePayload(raw)
	if err != nil {
		t.Fatalf("%s payload: %v", arch, err)
	}
	if x.arch != arch {
		t.Fatalf("payload arch %q, want %q", x.arch, arch)
	}
	return x
}

func checkError(t *testing.T, v testVector, err error) {
	t.Helper()
	var le *btfgenLookupError
	if !errors.As(err, &le) {
		t.Fatalf("error %v (%T), want a lookup error of kind %s", err, err, v.Expect.Error)
	}
	if le.kind != v.Expect.Error {
		t.Errorf("error kind %s, want %s: %v", le.kind, v.Expect.Error, err)
	}
	for _, c := range v.Expect.Contains {
		if !strings.Contains(err.Error(), c) {
			t.Errorf("error %q does not contain %q", err, c)
		}
	}
}

func checkSpecLabel(t *testing.T, vs *testVectors, x *btfgenIndex, entry int) {
	t.Helper()
	spec, err := x.spec(entry)
	if err != nil {
		t.Fatal(err)
	}
	want := vs.label(x.keys[entry])
	if _, err := spec.AnyTypeByName(want); err != nil {
		t.Errorf("spec of %s has no type %s: %v", x.keys[entry], want, err)
	}
}

// TestVectors runs every vector through the lookup, against the payload of the vector's own
// arch (so arm64 vectors run on amd64 and the other way round).
func TestVectors(t *testing.T) {
	vs := loadVectors(t)
	indexes := map[string]*btfgenIndex{}
	for arch := range vs.Payload {
		indexes[arch] = loadIndex(t, arch)
	}
	for _, v := range vs.Vectors {
		v := v
		t.Run(v.Name, func(t *testing.T) {
			arch := btfgenBTFHubArch(v.Machine)
			x := indexes[arch]
			if x == nil {
				x = indexes["x86_64"]
			}
			entry, via, err := x.lookup(vs.osReleaseText(v), v.Machine, v.Release)
			if v.Expect.Error != "" {
				if err == nil {
					t.Fatalf("got %s via %s, want a %s error", x.keys[entry], via, v.Expect.Error)
				}
				checkError(t, v, err)
				return
			}
			if err != nil {
				t.Fatalf("want %s: %v", v.Expect.Key, err)
			}
			if x.keys[entry] != v.Expect.Key || via != v.Expect.Via {
				t.Fatalf("got %s via %s, want %s via %s", x.keys[entry], via, v.Expect.Key,
					v.Expect.Via)
			}
			checkSpecLabel(t, vs, x, entry)
		})
	}
}

// TestVectorsLookupBTF runs the vectors of this GOARCH through the exported LookupBTF.
func TestVectorsLookupBTF(t *testing.T) {
	vs := loadVectors(t)
	ran := 0
	for _, v := range vs.Vectors {
		v := v
		arch := btfgenBTFHubArch(v.Machine)
		if arch != "" && arch != btfgenPayloadArch {
			continue
		}
		ran++
		t.Run(v.Name, func(t *testing.T) {
			spec, key, err := LookupBTF(vs.osReleaseText(v), v.Machine, v.Release)
			if btfgenPayloadArch == "" {
				if err == nil || !strings.Contains(err.Error(), "GOARCH gobtfgen does not embed") {
					t.Fatalf("want the no-embedded-arch error, got %v", err)
				}
				return
			}
			if v.Expect.Error != "" {
				if err == nil {
					t.Fatalf("got %s, want a %s error", key, v.Expect.Error)
				}
				checkError(t, v, err)
				return
			}
			if err != nil || key != v.Expect.Key {
				t.Fatalf("got %q, %v; want %s", key, err, v.Expect.Key)
			}
			if _, err := spec.AnyTypeByName(vs.label(key)); err != nil {
				t.Errorf("spec of %s lacks %s: %v", key, vs.label(key), err)
			}
		})
	}
	if ran == 0 {
		t.Fatal("no vector for this GOARCH")
	}
}

// fakeHost builds a host root from a vector's files and links and points the runtime at it.
func fakeHost(t *testing.T, vs *testVectors, v testVector) {
	t.Helper()
	root := t.TempDir()
	for path, name := range v.Files {
		full := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(vs.OSReleases[name]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for path, target := range v.Links {
		full := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, full); err != nil {
			t.Fatal(err)
		}
	}
	release := filepath.Join(t.TempDir(), "osrelease")
	if err := os.WriteFile(release, []byte(v.Release+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := btfgenReleasePath
	btfgenReleasePath = release
	t.Cleanup(func() { btfgenReleasePath = old })
	t.Setenv(btfgenHostRootEnv, root)
	t.Setenv(btfgenOverrideEnv, "")
}

// TestVectorsFindBTF runs the vectors of this GOARCH through FindBTF on a fake host root:
// reading os-release from $HOST_ROOT, /etc before /usr/lib, symlinks inside the root.
func TestVectorsFindBTF(t *testing.T) {
	vs := loadVectors(t)
	if btfgenPayloadArch == "" {
		t.Skip("this GOARCH embeds no BTF; TestVectorsLookupBTF checks its error")
	}
	for _, v := range vs.Vectors {
		v := v
		if btfgenBTFHubArch(v.Machine) != btfgenPayloadArch {
			continue
		}
		t.Run(v.Name, func(t *testing.T) {
			fakeHost(t, vs, v)
			res, err := FindBTF(BTFOptions{IgnoreNative: true})
			if v.Expect.Error != "" {
				if err == nil {
					t.Fatalf("got %v, want a %s error", res, v.Expect.Error)
				}
				checkError(t, v, err)
				if len(v.Files) == 0 && !strings.Contains(err.Error(), "no os-release at") {
					t.Errorf("error does not say os-release is missing: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Source != "embedded" || res.Key != v.Expect.Key || res.Spec == nil {
				t.Fatalf("got %v, want embedded %s", res, v.Expect.Key)
			}
			if got := res.String(); got != "embedded "+v.Expect.Key {
				t.Errorf("String() = %q", got)
			}
		})
	}
}

func TestVectorsParsed(t *testing.T) {
	vs := loadVectors(t)
	for _, v := range vs.Vectors {
		if v.Parsed == nil {
			continue
		}
		osr := btfgenNewOSRelease(vs.osReleaseText(v))
		like := osr.idLike
		if like == nil {
			like = []string{}
		}
		if osr.id != v.Parsed.ID || osr.versionID != v.Parsed.VersionID ||
			!reflect.DeepEqual(like, v.Parsed.IDLike) {
			t.Errorf("%s: parsed %+v, want %+v", v.Name, osr, *v.Parsed)
		}
		if v.Parsed.PrettyName != nil && osr.prettyName != *v.Parsed.PrettyName {
			t.Errorf("%s: PRETTY_NAME %q, want %q", v.Name, osr.prettyName, *v.Parsed.PrettyName)
		}
	}
}

// someKey returns an embedded key of this GOARCH and an os-release text that finds it.
func someKey(t *testing.T) (string, string) {
	t.Helper()
	keys, err := BTFGenKeys()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) == 0 {
		t.Skip("this GOARCH embeds no BTF")
	}
	parts := strings.Split(keys[0], "/")
	return keys[0], "ID=" + parts[0] + "\nVERSION_ID=" + parts[1] + "\n"
}

func TestNativeAndIgnoreNative(t *testing.T) {
	key, osRelease := someKey(t)
	fakeHost(t, &testVectors{OSReleases: map[string]string{"x": osRelease}}, testVector{
		Files: map[string]string{"etc/os-release": "x"}, Release: btfgenKeyPart(key, 3),
	})
	native := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(native, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	old := btfgenNativePath
	t.Cleanup(func() { btfgenNativePath = old })

	btfgenNativePath = native
	res, err := FindBTF(BTFOptions{})
	if err != nil || res.Source != "kernel" || res.Spec != nil || res.String() != "kernel" {
		t.Fatalf("native: got %v, %v", res, err)
	}
	spec, err := LoadBTFSpec()
	if spec != nil || err != nil {
		t.Fatalf("LoadBTFSpec with native BTF: got %v, %v; want nil, nil", spec, err)
	}
	res, err = FindBTF(BTFOptions{IgnoreNative: true})
	if err != nil || res.Source != "embedded" || res.Key != key {
		t.Fatalf("IgnoreNative: got %v, %v; want embedded %s", res, err, key)
	}
	btfgenNativePath = filepath.Join(t.TempDir(), "absent")
	res, err = FindBTF(BTFOptions{})
	if err != nil || res.Key != key {
		t.Fatalf("no native BTF: got %v, %v; want embedded %s", res, err, key)
	}
	spec, err = LoadBTFSpec()
	if spec == nil || err != nil {
		t.Fatalf("LoadBTFSpec without native BTF: got %v, %v", spec, err)
	}
}

func TestOverride(t *testing.T) {
	key, _ := someKey(t)
	raw, err := BTFGenRaw(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "custom.btf")
	if err := os.WriteFile(file, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	old := btfgenNativePath
	t.Cleanup(func() { btfgenNativePath = old })
	btfgenNativePath = "/" // exists: the override must win even over native BTF

	t.Setenv(btfgenOverrideEnv, file)
	res, err := FindBTF(BTFOptions{})
	if err != nil || res.Source != "override "+file || res.Spec == nil || res.Key != "" {
		t.Fatalf("override: got %v, %v", res, err)
	}
	if res.String() != "override "+file {
		t.Errorf("String() = %q", res.String())
	}

	for _, bad := range []string{filepath.Join(dir, "absent.btf"), "testdata/lookup.json"} {
		t.Setenv(btfgenOverrideEnv, bad)
		_, err = FindBTF(BTFOptions{})
		if err == nil || !strings.Contains(err.Error(), btfgenOverrideEnv+"="+bad) {
			t.Errorf("override %s: want an error naming the variable, got %v", bad, err)
		}
	}

	elf := filepath.Join("testdata", "vmlinux.elf")
	if _, err := os.Stat(elf); err != nil {
		t.Skip("testdata/vmlinux.elf absent: tests/test_go_runtime.py makes it when " +
			"objcopy is installed (Debian: binutils)")
	}
	t.Setenv(btfgenOverrideEnv, elf)
	res, err = FindBTF(BTFOptions{})
	if err != nil || res.Spec == nil {
		t.Fatalf("override with a vmlinux ELF: %v", err)
	}
	if _, err := res.Spec.AnyTypeByName("task_struct"); err != nil {
		t.Errorf("vmlinux ELF spec: %v", err)
	}
}

func TestGetBTFSpecLogsOnce(t *testing.T) {
	var buf bytes.Buffer
	log.SetOutput(&buf)
	t.Cleanup(func() { log.SetOutput(os.Stderr) })
	t.Setenv(btfgenOverrideEnv, filepath.Join(t.TempDir(), "absent.btf"))
	if GetBTFSpec() != nil || GetBTFSpec() != nil {
		t.Fatal("GetBTFSpec returned a spec for a missing override file")
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "btfgen: "+btfgenOverrideEnv) {
		t.Fatalf("want one logged error naming %s, got %q", btfgenOverrideEnv, buf.String())
	}
}

func TestKeysAndRaw(t *testing.T) {
	keys, err := BTFGenKeys()
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string]string{} // key -> sha256 of the BTF packed for it, every arch
	raw, err := os.ReadFile(filepath.Join("testdata", "blobs.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &sums); err != nil {
		t.Fatal(err)
	}
	var want []string
	for key := range sums {
		if btfgenKeyPart(key, 2) == btfgenPayloadArch {
			want = append(want, key)
		}
	}
	sort.Strings(want)
	if len(keys) == 0 {
		keys = nil
	}
	if !reflect.DeepEqual(keys, want) {
		t.Fatalf("BTFGenKeys = %v, want %v", keys, want)
	}
	for _, key := range keys {
		blob, err := BTFGenRaw(key)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(blob)
		if hex.EncodeToString(sum[:]) != sums[key] {
			t.Errorf("BTFGenRaw(%s) differs from the BTF packed for it", key)
		}
	}
	if _, err := BTFGenRaw("nosuch/1/x86_64/1.0"); err == nil {
		t.Error("BTFGenRaw of an unknown key: no error")
	}
}

// TestOldPayloadFormat: a payload of format version 1 (an older gobtfgen's) next to this code
// is an error telling the user to run gobtfgen generate again, not a lookup miss or a panic.
func TestOldPayloadFormat(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "v1.payload"))
	if err != nil {
		t.Fatal(err)
	}
	if raw[4] != 1 {
		t.Fatalf("testdata/v1.payload is version %d", raw[4])
	}
	_, err = btfgenParsePayload(raw)
	want := "payload: format version 1 was written by an older gobtfgen; this code reads " +
		"version 2: run `gobtfgen generate` again to regenerate the payload and this code"
	if err == nil || err.Error() != want {
		t.Fatalf("version 1 payload: error %v, want %q", err, want)
	}
}

// TestMixedPayload rebuilds every kernel of a payload that uses every part of the format
// (several groups, bases, derived nodes, kernels stored whole) and compares it with the BTF
// gobtfgen packed (testdata/mixed.json: key -> sha256).
func TestMixedPayload(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "mixed.payload"))
	if err != nil {
		t.Fatal(err)
	}
	x, err := btfgenParsePayload(raw)
	if err != nil {
		t.Fatal(err)
	}
	var sums map[string]string
	if data, err := os.ReadFile(filepath.Join("testdata", "mixed.json")); err != nil {
		t.Fatal(err)
	} else if err := json.Unmarshal(data, &sums); err != nil {
		t.Fatal(err)
	}
	if len(x.groups) < 2 || len(x.keys) != len(sums) {
		t.Fatalf("%d groups, %d keys (want several groups, %d keys)", len(x.groups),
			len(x.keys), len(sums))
	}
	based, whole := 0, 0
	for i, key := range x.keys {
		blob, err := x.blob(i)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		sum := sha256.Sum256(blob)
		if hex.EncodeToString(sum[:]) != sums[key] {
			t.Errorf("%s: rebuilt BTF differs from the one packed", key)
		}
		if _, err := x.spec(i); err != nil {
			t.Errorf("%s: %v", key, err)
		}
		k := x.kernels[x.entryKernel[i]]
		if k.raw {
			whole++
		} else if k.back != 0 {
			based++
		}
	}
	if whole != 3 || based == 0 {
		t.Errorf("%d kernels stored whole (want 3), %d with a base (want some)", whole, based)
	}
}

// TestHardening reads payloads that each break one hardening rule of the format (gobtfgen's
// tests/payloadcases.py hardening_cases; testdata/hardening.json: name -> the error every
// reader gives, "" for a payload that reads): parsing or some lookup fails with that text.
func TestHardening(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "hardening.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]string
	if err := json.Unmarshal(data, &want); err != nil {
		t.Fatal(err)
	}
	if len(want) < 6 {
		t.Fatalf("%d hardening cases, want 6 or more", len(want))
	}
	names := make([]string, 0, len(want))
	for name := range want {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		raw, err := os.ReadFile(filepath.Join("testdata", "hardening", name+".payload"))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		if x, err := btfgenParsePayload(raw); err != nil {
			got = append(got, err.Error())
		} else {
			for i := range x.keys {
				if _, err := x.blob(i); err != nil {
					got = append(got, err.Error())
				}
			}
		}
		switch msg := want[name]; {
		case msg == "" && len(got) > 0:
			t.Errorf("%s: %v, want no error", name, got)
		case msg != "" && len(got) == 0:
			t.Errorf("%s: no error, want %q", name, msg)
		case msg != "":
			for _, e := range got {
				if !strings.Contains(e, msg) {
					t.Errorf("%s: %q, want %q", name, e, msg)
				}
			}
		}
	}
}

// TestCorruptPayloads truncates the payload at every length and flips every byte: the
// reader must return errors, never panic, and never hand out BTF that fails its checksum.
func TestCorruptPayloads(t *testing.T) {
	raw, err := os.ReadFile("btfgen_arm64.payload")
	if err != nil {
		t.Fatal(err)
	}
	try := func(data []byte) {
		x, err := btfgenParsePayload(data)
		if err != nil {
			return
		}
		_, _, _ = btfgenFullSumOf(x.data, len(x.keys), 0)
		for i := range x.keys {
			if _, err := x.blob(i); err != nil {
				continue
			}
		}
		x.lookup("ID=ubuntu\nVERSION_ID=18.04\n", "aarch64", "4.15.0-20-generic")
	}
	for n := 0; n < len(raw); n++ {
		try(raw[:n])
	}
	for i := range raw {
		for _, flip := range []byte{0x01, 0x80, 0xff} {
			data := append([]byte(nil), raw...)
			data[i] ^= flip
			try(data)
		}
	}
}

// TestParseDifferential writes what this runtime makes of the os-release texts and releases
// in $BTFGEN_PARSE_CASES, for tests/test_go_runtime.py to compare with gobtfgen/keys.py.
func TestParseDifferential(t *testing.T) {
	in := os.Getenv("BTFGEN_PARSE_CASES")
	if in == "" {
		t.Skip("BTFGEN_PARSE_CASES not set: tests/test_go_runtime.py sets it")
	}
	raw, err := os.ReadFile(in)
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		OSRelease string `json:"os_release"`
		Release   string `json:"release"`
		Machine   string `json:"machine"`
	}
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	type result struct {
		Fields     map[string]string `json:"fields"`
		ID         string            `json:"id"`
		VersionID  string            `json:"version_id"`
		IDLike     []string          `json:"id_like"`
		Versions   []string          `json:"versions"`
		MarkerIDs  []string          `json:"marker_ids"`
		MarkerVers []string          `json:"marker_versions"`
		Arch       string            `json:"arch"`
		Key        string            `json:"key"`
		Via        string            `json:"via"`
		Error      string            `json:"error"`
		Kind       string            `json:"kind"`
	}
	x, err := btfgenEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]result, len(cases))
	for i, c := range cases {
		osr := btfgenNewOSRelease(c.OSRelease)
		ids, vers := btfgenMarkers(c.Release)
		out[i] = result{
			Fields: btfgenParseOSRelease(c.OSRelease), ID: osr.id, VersionID: osr.versionID,
			IDLike: osr.idLike, Versions: btfgenVersionCandidates(osr.id, osr.versionID),
			MarkerIDs: ids, MarkerVers: vers, Arch: btfgenBTFHubArch(c.Machine),
		}
		entry, via, err := x.lookup(c.OSRelease, c.Machine, c.Release)
		if err != nil {
			out[i].Error = err.Error()
			out[i].Kind = err.(*btfgenLookupError).kind
		} else {
			out[i].Key, out[i].Via = x.keys[entry], via
		}
	}
	data, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(in+".go.json", data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestRealHost runs FindBTF on this machine, without fakes, and wants the key gobtfgen host
// computes here (tests/test_go_runtime.py puts it in the payload and in the environment).
func TestRealHost(t *testing.T) {
	want := os.Getenv("BTFGEN_REAL_HOST_KEY")
	if want == "" {
		t.Skip("BTFGEN_REAL_HOST_KEY not set: tests/test_go_runtime.py sets it on hosts " +
			"with an os-release ID and VERSION_ID")
	}
	if btfgenBTFHubArch(btfgenMachine()) != btfgenKeyPart(want, 2) {
		t.Skip("the host key is for another arch than this test binary (qemu run)")
	}
	t.Setenv(btfgenOverrideEnv, "")
	t.Setenv(btfgenHostRootEnv, "")
	res, err := FindBTF(BTFOptions{IgnoreNative: true})
	if err != nil || res.Key != want || res.Source != "embedded" {
		t.Fatalf("got %v, %v; want embedded %s", res, err, want)
	}
}
