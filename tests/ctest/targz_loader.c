/*
 * A loader written the way bcc's libbpf-tools (btf_helpers.c) and eunomia's bpf-compatible read
 * their embedded BTF archive, to prove gobtfgen's min_core_btfs.tar.gz works with them
 * unchanged: the tar.gz is linked in with `ld -r -b binary` (min_core_btfs_tar.o), inflated
 * with zlib's gzip decoder, and the member named exactly "./<id>/<version>/<arch>/<release>.btf"
 * is looked up by walking the ustar headers.
 *
 *   targz_loader ID VERSION ARCH RELEASE OUT   writes the member to OUT; exit 1 if absent
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

extern unsigned char _binary_min_core_btfs_tar_gz_start[] __attribute__((weak));
extern unsigned char _binary_min_core_btfs_tar_gz_end[] __attribute__((weak));

static int inflate_gz(unsigned char *src, size_t src_len, unsigned char **dst, size_t *dst_len)
{
	size_t cap = src_len * 8 + 4096;
	unsigned char *out = malloc(cap);
	z_stream zs;
	int ret;

	if (!out)
		return -1;
	memset(&zs, 0, sizeof(zs));
	if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) /* gzip framing, as bcc does */
		return -1;
	zs.next_in = src;
	zs.avail_in = (uInt)src_len;
	do {
		if (zs.total_out == cap) {
			cap *= 2;
			out = realloc(out, cap);
			if (!out)
				return -1;
		}
		zs.next_out = out + zs.total_out;
		zs.avail_out = (uInt)(cap - zs.total_out);
		ret = inflate(&zs, Z_NO_FLUSH);
	} while (ret == Z_OK);
	if (ret != Z_STREAM_END) {
		inflateEnd(&zs);
		free(out);
		return -1;
	}
	*dst = out;
	*dst_len = zs.total_out;
	inflateEnd(&zs);
	return 0;
}

/* The member called name in a ustar archive, by its 100-byte name field and octal size. */
static unsigned char *tar_file_start(unsigned char *tar, size_t len, const char *name,
				     size_t *size)
{
	size_t pos = 0;

	while (pos + 512 <= len && tar[pos] != '\0') {
		char field[13];
		size_t member;

		memcpy(field, tar + pos + 124, 12);
		field[12] = '\0';
		member = strtoul(field, NULL, 8);
		if (strncmp((char *)tar + pos, name, 100) == 0 && tar[pos + 156] == '0') {
			*size = member;
			return tar + pos + 512;
		}
		pos += 512 + (member + 511) / 512 * 512;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	unsigned char *tar, *member;
	size_t tar_len, size;
	char name[512];
	FILE *out;

	if (argc != 6) {
		fprintf(stderr, "usage: targz_loader ID VERSION ARCH RELEASE OUT\n");
		return 2;
	}
	if (!_binary_min_core_btfs_tar_gz_start)
		return 3;
	snprintf(name, sizeof(name), "./%s/%s/%s/%s.btf", argv[1], argv[2], argv[3], argv[4]);
	if (inflate_gz(_binary_min_core_btfs_tar_gz_start,
		       (size_t)(_binary_min_core_btfs_tar_gz_end - _binary_min_core_btfs_tar_gz_start),
		       &tar, &tar_len)) {
		fprintf(stderr, "inflate failed\n");
		return 4;
	}
	member = tar_file_start(tar, tar_len, name, &size);
	if (!member) {
		fprintf(stderr, "%s: not in the archive\n", name);
		return 1;
	}
	out = fopen(argv[5], "wb");
	if (!out || fwrite(member, 1, size, out) != size || fclose(out))
		return 5;
	free(tar);
	return 0;
}
