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
 * names(...)    -> [(name, id)]: the candidate types of BTF._collect (the sections at the end).
 * sha256(data)  -> digest or None: SHA-256 with the x86 SHA extensions (no hashlib import).
 * keep_heap(largest, keep) -> bool: glibc malloc keeps freed buffers for reuse (see below).
 *
 * Both read untrusted input: every offset, id and length is checked before use, and a
 * malformed blob raises ValueError with the message the Python code gives.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

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

/* Room frame_into needs in each of offs[] and named[]: a record has 3 words at least, and
 * void takes offs[0]. Allocated, not touched: only the pages written are faulted in. */
static size_t frame_capacity(size_t n)
{
    return n / 3 + 2;
}

/* Frames words[0..n): offs[id] = word offset of type id (offs[0] = 0 is void). Returns the
 * count of ids including void, or -1 with a Python exception set. named[] gets the word
 * offsets of named-kind records (ascending), *n_named their number. Both arrays have
 * frame_capacity(n) entries. */
static Py_ssize_t frame_into(const uint32_t *words, size_t n, uint32_t *offs, uint32_t *named,
                             size_t *n_named)
{
    size_t count = 1, nn = 0, i = 0;
    offs[0] = 0;
    if (n > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "BTF type section is too large");
        return -1;
    }
    while (i < n) {
        if (i + 1 >= n) {
            /* the record's info word is missing (index_types reports the one before) */
            PyErr_Format(PyExc_ValueError, "BTF type section ends inside type %zu", count - 1);
            return -1;
        }
        uint32_t info = words[i + 1];
        unsigned kind = (info >> 24) & 0x1f;
        if (kind > K_MAX || (info & 0x60000000u)) {
            PyErr_Format(PyExc_ValueError, "BTF type %zu has unknown kind %u", count,
                         (unsigned)((info >> 24) & 0x7f));
            return -1;
        }
        uint64_t step = record_words(info);
        if (i + step > n) {
            PyErr_Format(PyExc_ValueError, "BTF type section ends inside type %zu", count);
            return -1;
        }
        offs[count++] = (uint32_t)i;
        if (named_kind(kind))
            named[nn++] = (uint32_t)i;
        i += step;
    }
    *n_named = nn;
    return (Py_ssize_t)count;
}

/* frame_into with arrays of its own, which the caller frees (both, on success). */
static Py_ssize_t frame_words(const uint32_t *words, size_t n, uint32_t **offs_out,
                              uint32_t **named_out, size_t *n_named)
{
    size_t cap = frame_capacity(n);
    uint32_t *offs = malloc(cap * sizeof *offs), *named = malloc(cap * sizeof *named);
    if (!offs || !named) {
        free(offs);
        free(named);
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t count = frame_into(words, n, offs, named, n_named);
    if (count < 0) {
        free(offs);
        free(named);
        return -1;
    }
    *offs_out = offs;
    *named_out = named;
    return count;
}

static PyObject *native_frame(PyObject *self, PyObject *args)
{
    Py_buffer view;
    PyObject *offs = NULL, *named = NULL;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*:frame", &view))
        return NULL;
    if (view.len % 4) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "BTF type section is not 4-byte aligned");
        return NULL;
    }
    size_t n = (size_t)view.len / 4, n_named = 0;
    Py_ssize_t count = -1;
    if (n > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "BTF type section is too large");
        goto done;
    }
    /* Framed straight into the bytes returned (their data is 8-aligned), cut to size after:
     * a malloc'd array copied into them cost 0.4 ms a kernel more (page faults and the copy). */
    offs = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(frame_capacity(n) * 4));
    named = offs ? PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(frame_capacity(n) * 4)) : NULL;
    if (!named)
        goto done;
    uint32_t *o = (uint32_t *)PyBytes_AS_STRING(offs), *m = (uint32_t *)PyBytes_AS_STRING(named);
    /* The words may sit at any address in the caller's blob (bytes objects are 8-aligned
     * past their header, views need not be): copy when unaligned rather than read unaligned. */
    if (((uintptr_t)view.buf) % 4) {
        uint32_t *copy = malloc(view.len ? (size_t)view.len : 1);
        if (!copy) {
            PyErr_NoMemory();
            goto done;
        }
        memcpy(copy, view.buf, (size_t)view.len);
        count = frame_into(copy, n, o, m, &n_named);
        free(copy);
    } else {
        count = frame_into(view.buf, n, o, m, &n_named);
    }
done:
    PyBuffer_Release(&view);
    if (count < 0 || _PyBytes_Resize(&offs, count * 4)
        || _PyBytes_Resize(&named, (Py_ssize_t)(n_named * 4))) {
        Py_XDECREF(offs);
        Py_XDECREF(named);
        return NULL;
    }
    return Py_BuildValue("(NN)", offs, named);
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

static PyObject *native_names(PyObject *self, PyObject *args); /* at the end */
static PyObject *native_sha256(PyObject *self, PyObject *args); /* at the end */

/* keep_heap(largest, keep): serve allocations up to `largest` bytes from the heap and give
 * freed memory back to the system only past `keep` bytes. A kernel costs a worker about 14 MB
 * of short-lived multi-megabyte buffers (the inflated tar, the raw BTF, its stripped form, the
 * cache entry); glibc maps each one fresh and unmaps it on free, so every kernel faulted in
 * some 3,500 zeroed pages again: 1.69 million page faults and 10% of a cold run's CPU as
 * system time over 430 kernels, 27 thousand with the heap kept. The price is that a worker's
 * resident memory stays at its peak (one kernel's buffers) between kernels. False where the
 * C library is not glibc or refused a value (it caps `largest` at 32 MiB on 64-bit). */
static PyObject *native_keep_heap(PyObject *self, PyObject *args)
{
    int largest, keep;
    (void)self;
    if (!PyArg_ParseTuple(args, "ii", &largest, &keep))
        return NULL;
#if defined(__GLIBC__)
    return PyBool_FromLong(mallopt(M_MMAP_THRESHOLD, largest) == 1 &&
                           mallopt(M_TRIM_THRESHOLD, keep) == 1);
#else
    (void)largest;
    (void)keep;
    Py_RETURN_FALSE;
#endif
}

static PyMethodDef native_methods[] = {
    {"frame", native_frame, METH_VARARGS,
     "frame(type_section) -> (offsets, named_at) as native u32 bytes (see index_types)."},
    {"strip", native_strip, METH_VARARGS,
     "strip(raw_btf) -> the BTF with records no CO-RE relocation reaches blanked, or None."},
    {"names", native_names, METH_VARARGS,
     "names(types, named_at, offsets, strings, str_len, prefixes, wanted) -> [(name, id)]"
     " (see BTF._collect)."},
    {"sha256", native_sha256, METH_VARARGS,
     "sha256(data) -> the 32-byte SHA-256 digest, or None where the CPU lacks SHA extensions."},
    {"keep_heap", native_keep_heap, METH_VARARGS,
     "keep_heap(largest, keep) -> whether glibc malloc now serves blocks up to largest bytes "
     "from its heap and trims only past keep bytes."},
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


/* ---------------------------------------------------------------------------------------
 * names(): the candidate-name scan of gobtfgen.btf.BTF._collect, in C.
 *
 * A cold `gobtfgen minimize` looks for a dozen names among a kernel's 14k-90k records of named
 * kinds; the Python scan (itemgetter, map, one startswith per record left) costs it 3-4 ms,
 * this about 0.1. It is an exact port, the Python staying the reference: the same records in
 * the same order, the same prefix filter (bytes.startswith over the blob after the string
 * section's start, as the Python reads it), the same name (up to its NUL or the section's
 * end, decoded as UTF-8 with errors="replace"), the same essential name, the same errors.
 *
 * The essential name is cut on the bytes, then decoded; the Python decodes, then cuts. The two
 * agree: a '_' byte is always a '_' character of the decoded name and no other character is
 * '_' (an ASCII byte ends any invalid sequence before it, and 0x5f is never a continuation
 * byte), so the "X___Y" rule finds the same separator, and a cut just before an ASCII byte
 * decodes to the decoded name's cut. */

static inline uint32_t load_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4); /* the views may sit at any address */
    return v;
}

/* gobtfgen.btf.essential_name_len on the name's bytes: the last "___" with something other
 * than '_' on both sides (j >= 1 and j + 3 < n). */
static size_t essential_len(const uint8_t *s, size_t n)
{
    size_t j;
    if (n < 5)
        return n;
    for (j = n - 4; j >= 1; j--)
        if (s[j] == '_' && s[j + 1] == '_' && s[j + 2] == '_' && s[j - 1] != '_'
            && s[j + 3] != '_')
            return j;
    return n;
}

static PyObject *native_names(PyObject *self, PyObject *args)
{
    Py_buffer words, named, offs, strs;
    Py_ssize_t str_len;
    PyObject *prefixes, *wanted, *hits = NULL;
    const char **pre = NULL;
    Py_ssize_t *pre_len = NULL, n_pre, k;
    /* prefixes by first byte: bucket b is order[start[b] .. start[b + 1]) */
    Py_ssize_t start[257] = {0};
    Py_ssize_t *order = NULL;
    int match_all = 0, bad_name = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*y*nO!O:names", &words, &named, &offs, &strs, &str_len,
                          &PyTuple_Type, &prefixes, &wanted))
        return NULL;
    const uint8_t *wb = words.buf, *nb = named.buf, *ob = offs.buf, *sb = strs.buf;
    size_t n_words = (size_t)words.len / 4, n_named = (size_t)named.len / 4;
    size_t n_offs = (size_t)offs.len / 4, s_view = (size_t)strs.len;
    if (str_len < 0 || (size_t)str_len > s_view) {
        PyErr_SetString(PyExc_ValueError, "BTF string section extends past the view given");
        goto done;
    }
    size_t slen = (size_t)str_len;
    n_pre = PyTuple_GET_SIZE(prefixes);
    pre = PyMem_Malloc(((size_t)n_pre + 1) * sizeof *pre);
    pre_len = PyMem_Malloc(((size_t)n_pre + 1) * sizeof *pre_len);
    order = PyMem_Malloc(((size_t)n_pre + 1) * sizeof *order);
    hits = PyList_New(0);
    if (!pre || !pre_len || !order || !hits) {
        if (hits)
            PyErr_NoMemory();
        Py_CLEAR(hits);
        goto done;
    }
    for (k = 0; k < n_pre; k++) {
        PyObject *p = PyTuple_GET_ITEM(prefixes, k);
        if (!PyBytes_Check(p)) {
            PyErr_SetString(PyExc_TypeError, "names: prefixes must be bytes");
            Py_CLEAR(hits);
            goto done;
        }
        pre[k] = PyBytes_AS_STRING(p);
        pre_len[k] = PyBytes_GET_SIZE(p);
        if (pre_len[k] == 0)
            match_all = 1; /* b"".startswith matches anywhere, as in bytes.startswith */
        else
            start[(uint8_t)pre[k][0] + 1]++;
    }
    if (n_pre == 0 || n_named == 0)
        goto done; /* _collect returns before looking at any record */
    for (k = 1; k < 257; k++)
        start[k] += start[k - 1];
    {
        Py_ssize_t fill[256];
        memcpy(fill, start, sizeof fill);
        for (k = 0; k < n_pre; k++)
            if (pre_len[k])
                order[fill[(uint8_t)pre[k][0]]++] = k;
    }
    for (size_t i = 0; i < n_named; i++) {
        uint32_t at = load_u32(nb + 4 * i);
        if (at >= n_words) {
            /* what itemgetter over the words raises, before any name is looked at */
            PyErr_SetString(PyExc_IndexError, "a named record's offset is past the type section");
            Py_CLEAR(hits);
            goto done;
        }
        uint32_t off = load_u32(wb + 4 * (size_t)at);
        if (off >= slen) {
            bad_name = 1; /* raised once every offset is known to be in the type section */
            continue;
        }
        if (bad_name)
            continue;
        const uint8_t *name = sb + off;
        size_t room = s_view - off; /* startswith may read past the section, as in Python */
        int match = match_all;
        for (Py_ssize_t b = start[name[0]]; !match && b < start[name[0] + 1]; b++) {
            Py_ssize_t p = order[b];
            match = (size_t)pre_len[p] <= room && !memcmp(name, pre[p], (size_t)pre_len[p]);
        }
        if (!match)
            continue;
        const uint8_t *nul = memchr(name, 0, slen - off);
        size_t len = nul ? (size_t)(nul - name) : slen - off;
        PyObject *key = PyUnicode_DecodeUTF8((const char *)name,
                                             (Py_ssize_t)essential_len(name, len), "replace");
        if (!key) {
            Py_CLEAR(hits);
            goto done;
        }
        int in = PySequence_Contains(wanted, key);
        if (in <= 0) {
            Py_DECREF(key);
            if (in < 0) {
                Py_CLEAR(hits);
                goto done;
            }
            continue;
        }
        /* the type id: bisect_left(offsets, at, 1) */
        size_t lo = 1, hi = n_offs;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (load_u32(ob + 4 * mid) < at)
                lo = mid + 1;
            else
                hi = mid;
        }
        PyObject *pair = Py_BuildValue("(Nn)", key, (Py_ssize_t)lo);
        if (!pair || PyList_Append(hits, pair)) {
            Py_XDECREF(pair);
            Py_CLEAR(hits);
            goto done;
        }
        Py_DECREF(pair);
    }
    if (bad_name) {
        PyErr_SetString(PyExc_ValueError,
                        "a BTF type's name offset is past the string section");
        Py_CLEAR(hits);
    }
done:
    PyBuffer_Release(&words);
    PyBuffer_Release(&named);
    PyBuffer_Release(&offs);
    PyBuffer_Release(&strs);
    PyMem_Free(pre);
    PyMem_Free(pre_len);
    PyMem_Free(order);
    return hits;
}


/* ---------------------------------------------------------------------------------------
 * sha256(): SHA-256 with the x86 SHA extensions, so a cold `gobtfgen minimize` need not import
 * hashlib.
 *
 * The kernel file's SHA-256 names its kept result (gobtfgen.minimize.replay). hashlib hashes
 * with OpenSSL, which uses these same instructions (about 1 GB/s here), but importing it loads
 * libcrypto: 2.5-3.5 ms of a cold run that has about 30 for its own work. These instructions
 * hash as fast; CPython's own SHA-256 (no SHA extensions) is 5x slower on a kernel's
 * megabytes. So: this where the CPU has the extensions (x86-64 since Goldmont and Zen), else
 * None and the caller uses hashlib. The digest is SHA-256's either way (the tests compare
 * with hashlib on every length around the block boundaries and on kernels). */

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_SHA_X86 1

static const uint32_t SHA256_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
};

static int sha_x86_available(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSSE3) || !(c & bit_SSE4_1))
        return 0;
    if (__get_cpuid_max(0, NULL) < 7)
        return 0;
    __cpuid_count(7, 0, a, b, c, d);
    return (b & bit_SHA) != 0;
}

/* Hashes n 64-byte blocks into state (a..h). Four rounds per step: the state lives as ABEF and
 * CDGH halves (what sha256rnds2 takes), the schedule as four vectors of four words, w[4g..4g+3]
 * in msg[g % 4] (sha256msg1 / msg2 extend it; Intel's SHA extensions white paper's order). */
__attribute__((target("sha,sse4.1,ssse3")))
static void sha256_blocks_x86(uint32_t state[8], const uint8_t *data, size_t n)
{
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_loadu_si128((const __m128i *)&state[0]);     /* a b c d */
    __m128i st1 = _mm_loadu_si128((const __m128i *)&state[4]);     /* e f g h */
    tmp = _mm_shuffle_epi32(tmp, 0xB1);                             /* CDAB */
    st1 = _mm_shuffle_epi32(st1, 0x1B);                             /* EFGH */
    __m128i st0 = _mm_alignr_epi8(tmp, st1, 8);                     /* ABEF */
    st1 = _mm_blend_epi16(st1, tmp, 0xF0);                          /* CDGH */
    for (; n; n--, data += 64) {
        __m128i save0 = st0, save1 = st1, msg[4];
        for (int g = 0; g < 4; g++)
            msg[g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 16 * g)), bswap);
#if defined(__clang__)
#pragma clang loop unroll(full)
#elif defined(__GNUC__)
#pragma GCC unroll 16
#endif
        for (int g = 0; g < 16; g++) { /* unrolled: the conditions fold, msg[] is registers */
            __m128i cur = msg[g & 3], prev = msg[(g - 1) & 3];
            __m128i k = _mm_add_epi32(cur, _mm_loadu_si128((const __m128i *)&SHA256_K[4 * g]));
            st1 = _mm_sha256rnds2_epu32(st1, st0, k);
            st0 = _mm_sha256rnds2_epu32(st0, st1, _mm_shuffle_epi32(k, 0x0E));
            if (g >= 3 && g < 15) {
                /* w[t] = s1(w[t-2]) + w[t-7] + s0(w[t-15]) + w[t-16] for the next step:
                 * msg1 added the s0 term two steps ago, alignr gives w[t-7], msg2 adds s1. */
                __m128i *next = &msg[(g + 1) & 3];
                *next = _mm_add_epi32(*next, _mm_alignr_epi8(cur, prev, 4));
                *next = _mm_sha256msg2_epu32(*next, cur);
            }
            if (g >= 1 && g <= 12) /* after the step above read prev as it was */
                msg[(g - 1) & 3] = _mm_sha256msg1_epu32(prev, cur);
        }
        st0 = _mm_add_epi32(st0, save0);
        st1 = _mm_add_epi32(st1, save1);
    }
    tmp = _mm_shuffle_epi32(st0, 0x1B);                             /* FEBA */
    st1 = _mm_shuffle_epi32(st1, 0xB1);                             /* DCHG */
    st0 = _mm_blend_epi16(tmp, st1, 0xF0);                          /* DCBA */
    st1 = _mm_alignr_epi8(st1, tmp, 8);                             /* HGFE */
    _mm_storeu_si128((__m128i *)&state[0], st0);
    _mm_storeu_si128((__m128i *)&state[4], st1);
}
#endif

static PyObject *native_sha256(PyObject *self, PyObject *args)
{
    Py_buffer view;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*:sha256", &view))
        return NULL;
#ifdef HAVE_SHA_X86
    static int available = -1;
    if (available < 0)
        available = sha_x86_available();
    if (available) {
        uint32_t state[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                             0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
        const uint8_t *data = view.buf;
        size_t len = (size_t)view.len, full = len / 64, rest = len % 64;
        uint8_t tail[128] = {0};
        uint64_t bits = (uint64_t)len * 8;
        /* as hashlib does for more than a few KB: other threads run meanwhile */
        Py_BEGIN_ALLOW_THREADS
        sha256_blocks_x86(state, data, full);
        memcpy(tail, data + 64 * full, rest);
        tail[rest] = 0x80;
        size_t tail_len = rest < 56 ? 64 : 128;
        for (int i = 0; i < 8; i++)
            tail[tail_len - 1 - i] = (uint8_t)(bits >> (8 * i));
        sha256_blocks_x86(state, tail, tail_len / 64);
        Py_END_ALLOW_THREADS
        PyBuffer_Release(&view);
        uint8_t digest[32];
        for (int i = 0; i < 8; i++) {
            digest[4 * i] = (uint8_t)(state[i] >> 24);
            digest[4 * i + 1] = (uint8_t)(state[i] >> 16);
            digest[4 * i + 2] = (uint8_t)(state[i] >> 8);
            digest[4 * i + 3] = (uint8_t)state[i];
        }
        return PyBytes_FromStringAndSize((const char *)digest, 32);
    }
#endif
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}
