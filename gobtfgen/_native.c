/* gobtfgen._native: the two loops over every record of a kernel BTF, in C.
 *
 * A kernel BTF holds 35k to 560k type records. Python frames them at about 100 ns a record
 * (gobtfgen.btf.index_types, the tightest loop found), which is most of what a cold
 * `gobtfgen minimize` or a cold `generate` spends on a kernel besides xz. This module does the
 * same work at a few ns a record. It is optional: gobtfgen/btf/native.py falls back to the
 * Python code when it is not built, and the tests check that both give the same bytes.
 *
 * frame(types)  -> (offsets, named_at): what index_types returns, as native u32 bytes.
 * strip(raw)    -> bytes or None: the kernel BTF with every record no CO-RE relocation can
 *                  reach replaced by `void *` and the strings only those records use zeroed
 *                  (gobtfgen/btf/strip.py says why that is safe and what it saves).
 *
 * Both read untrusted input: every offset, id and length is checked before use, and a
 * malformed blob raises ValueError with the message the Python code gives.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum {
    K_UNKN, K_INT, K_PTR, K_ARRAY, K_STRUCT, K_UNION, K_ENUM, K_FWD, K_TYPEDEF, K_VOLATILE,
    K_CONST, K_RESTRICT, K_FUNC, K_FUNC_PROTO, K_VAR, K_DATASEC, K_FLOAT, K_DECL_TAG,
    K_TYPE_TAG, K_ENUM64, K_MAX = K_ENUM64
};

/* Kinds a CO-RE candidate search asks for by name (gobtfgen.btf.NAMED_TYPE_KINDS). */
static int named_kind(unsigned k)
{
    switch (k) {
    case K_INT: case K_STRUCT: case K_UNION: case K_ENUM: case K_FWD: case K_TYPEDEF:
    case K_FLOAT: case K_TYPE_TAG: case K_ENUM64:
        return 1;
    default:
        return 0;
    }
}

/* Words of a record: 3 of common header, then the kind's extra words and vlen entries
 * (a table, not a switch: this runs several times per record in strip). */
static const uint8_t EXTRA_WORDS[32] = {
    [K_INT] = 1, [K_ARRAY] = 3, [K_VAR] = 1, [K_DECL_TAG] = 1,
};
static const uint8_t WORDS_PER_VLEN[32] = {
    [K_STRUCT] = 3, [K_UNION] = 3, [K_ENUM] = 2, [K_FUNC_PROTO] = 2, [K_DATASEC] = 3,
    [K_ENUM64] = 3,
};

static inline uint64_t record_words(uint32_t info)
{
    unsigned k = (info >> 24) & 0x1f;
    return 3u + EXTRA_WORDS[k] + (uint64_t)(info & 0xffff) * WORDS_PER_VLEN[k];
}

/* Frames words[0..n): offs[id] = word offset of type id (offs[0] = 0 is void). Returns the
 * count of ids including void, or -1 with a Python exception set. *named gets the word
 * offsets of named-kind records (ascending), *n_named their number. Caller frees both. */
static Py_ssize_t frame_words(const uint32_t *words, size_t n, uint32_t **offs_out,
                              uint32_t **named_out, size_t *n_named)
{
    size_t cap = n / 4 + 2, ncap = n / 16 + 2, count = 1, nn = 0, i = 0;
    uint32_t *offs = malloc(cap * sizeof *offs), *named = malloc(ncap * sizeof *named);
    if (!offs || !named) {
        free(offs);
        free(named);
        PyErr_NoMemory();
        return -1;
    }
    offs[0] = 0;
    if (n > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "BTF type section is too large");
        goto fail;
    }
    while (i < n) {
        if (i + 1 >= n) {
            /* the record's info word is missing (index_types reports the one before) */
            PyErr_Format(PyExc_ValueError, "BTF type section ends inside type %zu", count - 1);
            goto fail;
        }
        uint32_t info = words[i + 1];
        unsigned kind = (info >> 24) & 0x1f;
        if (kind > K_MAX || (info & 0x60000000u)) {
            PyErr_Format(PyExc_ValueError, "BTF type %zu has unknown kind %u", count,
                         (unsigned)((info >> 24) & 0x7f));
            goto fail;
        }
        uint64_t step = record_words(info);
        if (i + step > n) {
            PyErr_Format(PyExc_ValueError, "BTF type section ends inside type %zu", count);
            goto fail;
        }
        if (count == cap) {
            cap *= 2;
            uint32_t *grown = realloc(offs, cap * sizeof *offs);
            if (!grown) {
                PyErr_NoMemory();
                goto fail;
            }
            offs = grown;
        }
        offs[count++] = (uint32_t)i;
        if (named_kind(kind)) {
            if (nn == ncap) {
                ncap *= 2;
                uint32_t *grown = realloc(named, ncap * sizeof *named);
                if (!grown) {
                    PyErr_NoMemory();
                    goto fail;
                }
                named = grown;
            }
            named[nn++] = (uint32_t)i;
        }
        i += step;
    }
    *offs_out = offs;
    *named_out = named;
    *n_named = nn;
    return (Py_ssize_t)count;
fail:
    free(offs);
    free(named);
    return -1;
}

static PyObject *native_frame(PyObject *self, PyObject *args)
{
    Py_buffer view;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*:frame", &view))
        return NULL;
    if (view.len % 4) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "BTF type section is not 4-byte aligned");
        return NULL;
    }
    uint32_t *offs = NULL, *named = NULL;
    size_t n_named = 0;
    Py_ssize_t count;
    /* The words may sit at any address in the caller's blob (bytes objects are 8-aligned
     * past their header, views need not be): copy when unaligned rather than read unaligned. */
    if (((uintptr_t)view.buf) % 4) {
        uint32_t *copy = malloc(view.len ? (size_t)view.len : 1);
        if (!copy) {
            PyBuffer_Release(&view);
            return PyErr_NoMemory();
        }
        memcpy(copy, view.buf, (size_t)view.len);
        count = frame_words(copy, (size_t)view.len / 4, &offs, &named, &n_named);
        free(copy);
    } else {
        count = frame_words(view.buf, (size_t)view.len / 4, &offs, &named, &n_named);
    }
    PyBuffer_Release(&view);
    if (count < 0)
        return NULL;
    PyObject *res = Py_BuildValue("(y#y#)", (const char *)offs, count * 4,
                                  (const char *)named, (Py_ssize_t)(n_named * 4));
    free(offs);
    free(named);
    return res;
}

/* Marks the type ids a record refers to (libbpf's btf_type_visit_type_ids) as kept: keep[]
 * is 0 (not kept), 1 (kept, its references not marked yet) or 2 (done). A newly kept id below
 * `below` (the caller's scan position) is pushed on the stack, one at or above it is left to
 * the scan. Returns -1 (exception set) on an id >= count. */
static int mark_refs(const uint32_t *w, uint32_t count, uint8_t *keep, uint32_t *stack,
                     size_t *sp, uint32_t below)
{
    uint32_t info = w[1];
    unsigned k = (info >> 24) & 0x1f;
    size_t vlen = info & 0xffff, j;
    uint32_t refs_buf[3];
    const uint32_t *list = NULL;
    size_t nlist = 0, stride = 0, nrefs = 0;
    switch (k) {
    case K_PTR: case K_TYPEDEF: case K_VOLATILE: case K_CONST: case K_RESTRICT: case K_FUNC:
    case K_VAR: case K_DECL_TAG: case K_TYPE_TAG:
        refs_buf[nrefs++] = w[2];
        break;
    case K_FUNC_PROTO:
        refs_buf[nrefs++] = w[2];
        list = w + 3 + 1, nlist = vlen, stride = 2; /* params: name_off, type */
        break;
    case K_ARRAY:
        refs_buf[nrefs++] = w[3];
        refs_buf[nrefs++] = w[4];
        break;
    case K_STRUCT: case K_UNION:
        list = w + 3 + 1, nlist = vlen, stride = 3; /* members: name_off, type, offset */
        break;
    case K_DATASEC:
        list = w + 3, nlist = vlen, stride = 3; /* vars: type, offset, size */
        break;
    default:
        break;
    }
    for (j = 0; j < nrefs + nlist; j++) {
        uint32_t ref = j < nrefs ? refs_buf[j] : list[(j - nrefs) * stride];
        if (ref >= count) {
            PyErr_Format(PyExc_ValueError, "BTF type refers to missing type %u", ref);
            return -1;
        }
        if (!keep[ref]) {
            keep[ref] = 1;
            if (ref < below)
                stack[(*sp)++] = ref;
        }
    }
    return 0;
}

/* Copies the string at off (through its NUL) from src into dst, once. */
static int keep_string(const uint8_t *src, uint8_t *dst, size_t slen, uint32_t off)
{
    if (off == 0)
        return 0;
    if (off >= slen) {
        PyErr_Format(PyExc_ValueError, "BTF string offset %u is past the string section", off);
        return -1;
    }
    if (dst[off] || !src[off])
        return 0; /* copied already, or an empty string (zero either way) */
    const uint8_t *end = memchr(src + off, 0, slen - off);
    if (!end) {
        PyErr_Format(PyExc_ValueError, "BTF string at %u is not terminated", off);
        return -1;
    }
    memcpy(dst + off, src + off, (size_t)(end - (src + off)));
    return 0;
}

static int keep_strings(const uint32_t *w, const uint8_t *src, uint8_t *dst, size_t slen)
{
    uint32_t info = w[1];
    unsigned k = (info >> 24) & 0x1f;
    size_t vlen = info & 0xffff, stride = 0, j;
    if (keep_string(src, dst, slen, w[0]))
        return -1;
    switch (k) {
    case K_STRUCT: case K_UNION: case K_ENUM64: stride = 3; break; /* name_off first */
    case K_ENUM: case K_FUNC_PROTO: stride = 2; break;
    default: return 0;
    }
    for (j = 0; j < vlen; j++)
        if (keep_string(src, dst, slen, w[3 + j * stride]))
            return -1;
    return 0;
}

static PyObject *native_strip(PyObject *self, PyObject *args)
{
    Py_buffer view;
    PyObject *res = NULL;
    uint32_t *offs = NULL, *named = NULL, *words = NULL, *stack = NULL;
    uint8_t *keep = NULL, *out;
    size_t n_named = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*:strip", &view))
        return NULL;
    const uint8_t *data = view.buf;
    size_t len = (size_t)view.len;
    uint32_t h[6]; /* magic/version/flags/hdr_len, type_off, type_len, str_off, str_len */
    const uint16_t one = 1;
    /* Only the layout every kernel BTF has (pahole and libbpf write it): a 24-byte header in
     * this machine's byte order, types then strings. Anything else is kept whole (None). */
    if (len < 24 || !*(const uint8_t *)&one)
        goto keep_whole;
    memcpy(h, data, 24);
    uint16_t magic;
    memcpy(&magic, data, 2);
    if (magic != 0xEB9F || data[2] != 1 || h[1] != 24 || h[2] != 0 || h[4] != h[3]
        || (uint64_t)24 + h[3] + h[5] != len || h[3] % 4)
        goto keep_whole;
    size_t type_len = h[3], slen = h[5], n = type_len / 4;
    const uint32_t *w32 = (const uint32_t *)(data + 24);
    if (((uintptr_t)w32) % 4) { /* a view at an odd address: read an aligned copy */
        words = malloc(type_len ? type_len : 4);
        if (!words) {
            PyErr_NoMemory();
            goto done;
        }
        memcpy(words, data + 24, type_len);
        w32 = words;
    }
    const uint8_t *src = data + 24 + type_len;
    if (slen && src[0] != 0) {
        PyErr_SetString(PyExc_ValueError, "BTF string section does not start with NUL");
        goto done;
    }
    Py_ssize_t count = frame_words(w32, n, &offs, &named, &n_named);
    if (count < 0)
        goto done;
    keep = calloc((size_t)count, 1);
    stack = malloc((size_t)count * sizeof *stack);
    if (!keep || !stack) {
        PyErr_NoMemory();
        goto done;
    }
    keep[0] = 2;
    size_t sp = 0;
    Py_ssize_t t;
    /* Roots: every named-kind record (CO-RE finds candidates by name among these kinds only;
     * anonymous ones of these kinds are kept too, which costs little and decides nothing).
     * One scan in id order marks what kept records refer to: ids ahead are reached by the
     * scan itself, ids behind go through the stack at once. Each record's references are
     * marked once (linear), and the scan reads the section in order, which a depth-first walk
     * from every root does not (measured: 4-5 ms a kernel for the walk, mostly cache misses). */
    for (t = 1; t < count; t++) {
        unsigned k = (w32[offs[t] + 1] >> 24) & 0x1f;
        if (named_kind(k))
            keep[t] = 1;
    }
    for (t = 1; t < count; t++) {
        if (keep[t] != 1)
            continue;
        keep[t] = 2;
        if (mark_refs(w32 + offs[t], (uint32_t)count, keep, stack, &sp, (uint32_t)t))
            goto done;
        while (sp) {
            uint32_t id = stack[--sp];
            if (keep[id] != 1)
                continue;
            keep[id] = 2;
            if (mark_refs(w32 + offs[id], (uint32_t)count, keep, stack, &sp, (uint32_t)t))
                goto done;
        }
    }
    /* Output: header, the kept records verbatim and a 3-word `void *` for each other one
     * (ids do not move), then the string section with only the kept records' strings. */
    size_t out_words = 0;
    for (t = 1; t < count; t++)
        out_words += keep[t] ? record_words(w32[offs[t] + 1]) : 3;
    size_t out_len = 24 + out_words * 4 + slen;
    /* Written in place into the bytes object returned (its data is 8-aligned). */
    res = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)out_len);
    if (!res)
        goto done;
    out = (uint8_t *)PyBytes_AS_STRING(res);
    uint32_t *ow = (uint32_t *)(out + 24);
    size_t at = 0;
    uint8_t *dst = out + 24 + out_words * 4;
    memset(dst, 0, slen);
    for (t = 1; t < count; t++) {
        const uint32_t *w = w32 + offs[t];
        if (keep[t]) {
            size_t nw = (size_t)record_words(w[1]);
            memcpy(ow + at, w, nw * 4);
            at += nw;
            if (keep_strings(w, src, dst, slen)) {
                Py_CLEAR(res);
                goto done;
            }
        } else {
            ow[at] = 0;
            ow[at + 1] = (uint32_t)K_PTR << 24;
            ow[at + 2] = 0;
            at += 3;
        }
    }
    h[3] = (uint32_t)(out_words * 4);
    h[4] = h[3];
    memcpy(out, h, 24);
done:
    PyBuffer_Release(&view);
    free(words);
    free(offs);
    free(named);
    free(keep);
    free(stack);
    return res;
keep_whole:
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

static PyMethodDef native_methods[] = {
    {"frame", native_frame, METH_VARARGS,
     "frame(type_section) -> (offsets, named_at) as native u32 bytes (see index_types)."},
    {"strip", native_strip, METH_VARARGS,
     "strip(raw_btf) -> the BTF with records no CO-RE relocation reaches blanked, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "_native", "gobtfgen's compiled BTF loops (optional).", -1,
    native_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void)
{
    return PyModule_Create(&native_module);
}
