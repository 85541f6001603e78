/*
 * Test harness of the generated C runtime (tests/test_c_runtime.py compiles it with gcc and
 * clang, -Wall -Wextra -Werror, next to a btfgen.c generated from the shared lookup vectors).
 * It includes btfgen.c itself to reach the static lookup and payload functions.
 *
 *   harness lookup PAYLOAD CASES   one line per case: "ok\tKEY\tVIA\tLEN\tCRC32" or
 *                                  "err\tKIND\tMESSAGE"; CASES holds, per case, three
 *                                  length-prefixed fields: os-release text, machine, release
 *   harness find [ignore-native]   ensure_core_btf() on this host (or $HOST_ROOT), with the
 *                                  release read from $HARNESS_RELEASE_FILE and native BTF
 *                                  at $HARNESS_NATIVE_PATH when set; prints rc, source, the
 *                                  temporary file's mode, size and crc32, whether
 *                                  clean_core_btf() removed it
 *   harness diff PAYLOAD CASES     per case (as for lookup), length-prefixed fields "N:bytes":
 *                                  id, version_id, id_like, version candidates, marker ids,
 *                                  marker versions, btfhub arch (lists joined by \x1d), then
 *                                  the lookup's key, via, failure kind and message
 *   harness corrupt PAYLOAD        every truncation and many byte flips of PAYLOAD must give
 *                                  errors, never a crash (run it under the sanitizers)
 *   harness dump PAYLOAD           every entry's BTF, one line each: "ok\tKEY\tHEX" or
 *                                  "err\tKEY\tMESSAGE"; a payload that does not parse is
 *                                  one line "err\t-\tMESSAGE"
 */
#include "btfgen.c"

#include <sys/stat.h>

static unsigned char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf = NULL;
	size_t cap = 0, n;

	if (!f) {
		perror(path);
		exit(2);
	}
	*len = 0;
	do {
		if (*len + 65536 > cap) {
			cap = (*len + 65536) * 2;
			buf = realloc(buf, cap);
			if (!buf)
				exit(3);
		}
		n = fread(buf + *len, 1, cap - *len, f);
		*len += n;
	} while (n > 0);
	fclose(f);
	return buf;
}

static const char *kind_name(enum btfgen_failure f)
{
	switch (f) {
	case BTFGEN_ARCH:
		return "arch";
	case BTFGEN_MISS:
		return "miss";
	case BTFGEN_AMBIGUOUS:
		return "ambiguous";
	case BTFGEN_NOMEM:
		return "nomem";
	default:
		return "ok";
	}
}

static int do_lookup(const char *payload_path, const char *cases_path)
{
	size_t plen, clen, pos = 0;
	unsigned char *payload = read_file(payload_path, &plen);
	unsigned char *cases = read_file(cases_path, &clen);
	struct btfgen_str err = { 0 };
	struct btfgen_index x;

	if (btfgen_parse_payload(payload, plen, &x, &err)) {
		fprintf(stderr, "parse %s: %s\n", payload_path, err.s);
		return 1;
	}
	while (pos + 12 <= clen) {
		/* Three fields, each a little-endian u32 length and its bytes (os-release texts in
		 * the vectors hold NUL bytes). */
		char *field[3];
		size_t flen[3];

		for (int i = 0; i < 3; i++) {
			flen[i] = pos + 4 <= clen ? btfgen_le32(cases + pos) : 0;
			pos += 4;
			if (pos + flen[i] > clen)
				exit(4);
			field[i] = btfgen_strndup((const char *)cases + pos, flen[i]);
			pos += flen[i];
		}
		const char *osr = field[0], *machine = field[1], *release = field[2];
		size_t osr_len = flen[0];
		const char *via = NULL;
		long entry = -1;
		enum btfgen_failure f;

		err.len = 0;
		btfgen_add(&err, "");
		f = btfgen_lookup(&x, osr, osr_len, machine, release, &entry, &via, &err);
		if (f == BTFGEN_OK) {
			unsigned char *btf;
			size_t len;

			if (btfgen_blob_of(&x, (uint32_t)entry, &btf, &len, &err)) {
				printf("err\tblob\t%s\n", err.s);
			} else {
				printf("ok\t%s\t%s\t%zu\t%lu\n", x.keys[entry], via, len,
				       crc32(0L, btf, (uInt)len));
				free(btf);
			}
		} else {
			printf("err\t%s\t%s\n", kind_name(f), err.s);
		}
		for (int i = 0; i < 3; i++)
			free(field[i]);
	}
	btfgen_index_free(&x);
	free(err.s);
	free(payload);
	free(cases);
	return 0;
}

static int do_find(unsigned int flags)
{
	LIBBPF_OPTS(bpf_object_open_opts, opts);
	const char *release = getenv("HARNESS_RELEASE_FILE");
	const char *native = getenv("HARNESS_NATIVE_PATH");
	int rc;

	if (release)
		btfgen_release_path = release;
	if (native)
		btfgen_native_path = native;
	rc = btfgen_ensure_core_btf(&opts, flags);
	printf("rc=%d\nsource=%s\n", rc, btfgen_source());
	if (opts.btf_custom_path) {
		const char *path = opts.btf_custom_path;
		char *copy = strdup(path);
		struct stat st;
		size_t len;
		unsigned char *data;

		if (!copy || stat(path, &st)) {
			perror(path);
			return 1;
		}
		data = read_file(path, &len);
		printf("path=%s\nmode=%04o\nsize=%zu\ncrc=%lu\n", path, (unsigned)(st.st_mode & 07777),
		       len, crc32(0L, data, (uInt)len));
		free(data);
		clean_core_btf(&opts);
		printf("cleared=%d\nexists_after_clean=%d\n", opts.btf_custom_path == NULL,
		       access(copy, F_OK) == 0);
		free(copy);
	} else {
		printf("path=\n");
	}
	return 0;
}

static void put(const char *s)
{
	printf("%zu:%s", strlen(s), s);
}

static void put_list(const char *const *items, size_t n)
{
	struct btfgen_str b = { 0 };

	btfgen_add(&b, "");
	for (size_t i = 0; i < n; i++) {
		if (i)
			btfgen_add(&b, "\x1d");
		btfgen_add(&b, items[i]);
	}
	put(b.s);
	free(b.s);
}

static int do_diff(const char *payload_path, const char *cases_path)
{
	size_t plen, clen, pos = 0;
	unsigned char *payload = read_file(payload_path, &plen);
	unsigned char *cases = read_file(cases_path, &clen);
	struct btfgen_str err = { 0 };
	struct btfgen_index x;

	if (btfgen_parse_payload(payload, plen, &x, &err)) {
		fprintf(stderr, "parse %s: %s\n", payload_path, err.s);
		return 1;
	}
	while (pos + 12 <= clen) {
		char *field[3], versions[3][256];
		const char *list[3];
		size_t flen[3];
		struct btfgen_os_release osr;
		struct btfgen_markers m;
		const char *via = "";
		long entry = -1;
		enum btfgen_failure f;
		int nv;

		for (int i = 0; i < 3; i++) {
			flen[i] = btfgen_le32(cases + pos);
			pos += 4;
			if (pos + flen[i] > clen)
				exit(4);
			field[i] = btfgen_strndup((const char *)cases + pos, flen[i]);
			pos += flen[i];
		}
		if (btfgen_parse_os_release(field[0], flen[0], &osr))
			exit(5);
		put(osr.id);
		put(osr.version_id);
		put_list((const char *const *)osr.id_like, osr.n_id_like);
		nv = btfgen_version_candidates(osr.id, osr.version_id, versions);
		for (int i = 0; i < nv; i++)
			list[i] = versions[i];
		put_list(list, (size_t)nv);
		btfgen_markers_of(field[2], &m);
		put_list(m.ids, (size_t)m.n_ids);
		for (int i = 0; i < m.n_versions; i++)
			list[i] = m.versions[i];
		put_list(list, (size_t)m.n_versions);
		put(btfgen_btfhub_arch(field[1]));
		err.len = 0;
		btfgen_add(&err, "");
		f = btfgen_lookup(&x, field[0], flen[0], field[1], field[2], &entry, &via, &err);
		put(f == BTFGEN_OK ? x.keys[entry] : "");
		put(f == BTFGEN_OK ? via : "");
		put(f == BTFGEN_OK ? "" : kind_name(f));
		put(f == BTFGEN_OK ? "" : err.s);
		putchar('\n');
		btfgen_os_release_free(&osr);
		for (int i = 0; i < 3; i++)
			free(field[i]);
	}
	btfgen_index_free(&x);
	free(err.s);
	free(payload);
	free(cases);
	return 0;
}

static void try_payload(const unsigned char *data, size_t len)
{
	struct btfgen_str err = { 0 };
	struct btfgen_index x;

	if (btfgen_parse_payload(data, len, &x, &err) == 0) {
		const char *via;
		long entry;

		for (uint32_t i = 0; i < x.n_keys; i++) {
			unsigned char *btf;
			size_t n;

			if (btfgen_blob_of(&x, i, &btf, &n, &err) == 0)
				free(btf);
		}
		if (*x.arch)
			btfgen_lookup(&x, "ID=ubuntu\nVERSION_ID=18.04\n", 27, "aarch64",
				      "4.15.0-20-generic", &entry, &via, &err);
		btfgen_index_free(&x);
	}
	free(err.s);
}

static int do_corrupt(const char *payload_path)
{
	size_t len;
	unsigned char *payload = read_file(payload_path, &len);
	unsigned char *copy = malloc(len ? len : 1);
	static const unsigned char flips[] = { 0x01, 0x80, 0xff };

	for (size_t n = 0; n < len; n++) {
		/* A copy of exactly n bytes, so that the sanitizers see every read past its end. */
		unsigned char *cut = malloc(n ? n : 1);

		memcpy(cut, payload, n);
		try_payload(cut, n);
		free(cut);
	}
	for (size_t i = 0; i < len; i++)
		for (size_t f = 0; f < sizeof(flips); f++) {
			memcpy(copy, payload, len);
			copy[i] ^= flips[f];
			try_payload(copy, len);
		}
	free(copy);
	free(payload);
	printf("survived %zu truncations and %zu flips\n", len, len * sizeof(flips));
	return 0;
}

static int do_dump(const char *payload_path)
{
	size_t plen;
	unsigned char *payload = read_file(payload_path, &plen);
	struct btfgen_str err = { 0 };
	struct btfgen_index x;

	btfgen_add(&err, "");
	if (btfgen_parse_payload(payload, plen, &x, &err)) {
		printf("err\t-\t%s\n", err.s);
		free(err.s);
		free(payload);
		return 0;
	}
	for (uint32_t i = 0; i < x.n_keys; i++) {
		unsigned char *btf;
		size_t len;

		err.len = 0;
		btfgen_add(&err, "");
		if (btfgen_blob_of(&x, i, &btf, &len, &err)) {
			printf("err\t%s\t%s\n", x.keys[i], err.s);
			continue;
		}
		printf("ok\t%s\t", x.keys[i]);
		for (size_t j = 0; j < len; j++)
			printf("%02x", btf[j]);
		putchar('\n');
		free(btf);
	}
	btfgen_index_free(&x);
	free(err.s);
	free(payload);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "lookup"))
		return do_lookup(argv[2], argv[3]);
	if (argc >= 2 && !strcmp(argv[1], "find"))
		return do_find(argc > 2 && !strcmp(argv[2], "ignore-native") ?
				       BTFGEN_IGNORE_NATIVE : 0);
	if (argc == 4 && !strcmp(argv[1], "diff"))
		return do_diff(argv[2], argv[3]);
	if (argc == 3 && !strcmp(argv[1], "corrupt"))
		return do_corrupt(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "dump"))
		return do_dump(argv[2]);
	fprintf(stderr, "usage: harness lookup PAYLOAD CASES | find [ignore-native] | "
			"corrupt PAYLOAD | dump PAYLOAD\n");
	return 2;
}
