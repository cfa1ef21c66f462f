/*
 * A DNS response -> its canonical RRsets, in C: decompose.rrsets for the
 * ingest's hot path (collector._ingest; _nmsgscan.c calls it on each
 * response it reads).
 *
 * Why C: reading the message by wdns's rules (sensor.display.dnsmessage.decode)
 * and making its RRsets (decompose.rrsets) was the largest step of the
 * collector benchmark's ingest, 22% of its profile, about 26 microseconds
 * a response in Python against 1 here (README, "The compiled parts").
 * The rules stay stated in Python, in
 * those two modules; tests/test_collector_fast.py holds this file to them
 * on crafted messages (every NAME_FIELDS type, compression, bad pointers,
 * truncation), on random ones (hypothesis) and on the benchmark's. The
 * tables below (wdns's descriptors, the name layouts) are exported and
 * compared with dnsmessage.DESCRIPTORS and decompose.NAME_FIELDS.
 *
 * decompose(wire, len, &out) gives one of:
 *   DC_OK           out: a tuple of (owner, type, rdatas) in the order the
 *                   RRsets first appear (decompose.rrsets's dict, as items)
 *   DC_UNDECODABLE  decompose.Undecodable
 *   DC_NOT_RESPONSE, DC_TRUNCATED, DC_NOT_QUERY: decompose.NotData's reasons
 *   DC_ERROR        a Python exception is set (no memory)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_decompose.h"

typedef unsigned char u8;

#define DNS_HEADER_LEN 12
#define MAX_NAME_LEN 255
#define CLASS_IN 1
#define TYPE_OPT 41
#define FLAG_QR 0x8000
#define FLAG_TC 0x0200

/* dnsmessage's field kinds, by their numbers there */
enum {
    K_NAME, K_BYTES, K_B64, K_BYTES_STR, K_INT8, K_INT16, K_INT32, K_IPV4, K_IPV6, K_IPV6PREFIX, K_EUI48,
    K_EUI64, K_STRING, K_REPSTRING, K_RRTYPE, K_BITMAP, K_SALT, K_HASH, K_SVCPARAMS, K_EDNS_OPTS,
};

typedef struct {
    unsigned type;
    int in_only; /* dnsmessage's IN_CLASS */
    const char *kinds; /* the kinds, each as its number plus 'a' */
} descriptor_t;

#define D(...) ((const char[]){__VA_ARGS__, 0})
#define A(k) ('a' + (k))
/* dnsmessage.DESCRIPTORS */
static const descriptor_t descriptors[] = {
    {1, 1, D(A(K_IPV4))}, {2, 0, D(A(K_NAME))}, {3, 0, D(A(K_NAME))}, {4, 0, D(A(K_NAME))},
    {5, 0, D(A(K_NAME))},
    {6, 0, D(A(K_NAME), A(K_NAME), A(K_INT32), A(K_INT32), A(K_INT32), A(K_INT32), A(K_INT32))},
    {7, 0, D(A(K_NAME))}, {8, 0, D(A(K_NAME))}, {9, 0, D(A(K_NAME))}, {10, 0, D(A(K_BYTES))},
    {11, 1, D(A(K_INT32), A(K_INT8), A(K_BYTES))}, {12, 0, D(A(K_NAME))},
    {13, 0, D(A(K_STRING), A(K_STRING))}, {14, 0, D(A(K_NAME), A(K_NAME))},
    {15, 0, D(A(K_INT16), A(K_NAME))}, {16, 0, D(A(K_REPSTRING))}, {17, 0, D(A(K_NAME), A(K_NAME))},
    {18, 0, D(A(K_INT16), A(K_NAME))}, {19, 0, D(A(K_STRING))}, {20, 0, D(A(K_STRING), A(K_STRING))},
    {21, 0, D(A(K_INT16), A(K_NAME))},
    {24, 0, D(A(K_INT16), A(K_INT8), A(K_INT8), A(K_INT32), A(K_INT32), A(K_INT32), A(K_INT16), A(K_NAME),
              A(K_BYTES))},
    {26, 1, D(A(K_INT16), A(K_NAME), A(K_NAME))}, {28, 1, D(A(K_IPV6))}, {30, 0, D(A(K_NAME), A(K_BYTES))},
    {33, 1, D(A(K_INT16), A(K_INT16), A(K_INT16), A(K_NAME))},
    {35, 1, D(A(K_INT16), A(K_INT16), A(K_STRING), A(K_STRING), A(K_STRING), A(K_NAME))},
    {36, 1, D(A(K_INT16), A(K_NAME))}, {38, 1, D(A(K_IPV6PREFIX), A(K_NAME))}, {39, 0, D(A(K_NAME))},
    {41, 0, D(A(K_EDNS_OPTS))}, {43, 0, D(A(K_INT16), A(K_INT8), A(K_INT8), A(K_BYTES))},
    {46, 0, D(A(K_RRTYPE), A(K_INT8), A(K_INT8), A(K_INT32), A(K_INT32), A(K_INT32), A(K_INT16), A(K_NAME),
              A(K_B64))},
    {47, 0, D(A(K_NAME), A(K_BITMAP))}, {48, 0, D(A(K_INT16), A(K_INT8), A(K_INT8), A(K_B64))},
    {50, 0, D(A(K_INT8), A(K_INT8), A(K_INT16), A(K_SALT), A(K_HASH), A(K_BITMAP))},
    {51, 0, D(A(K_INT8), A(K_INT8), A(K_INT16), A(K_SALT))},
    {52, 0, D(A(K_INT8), A(K_INT8), A(K_INT8), A(K_BYTES))},
    {59, 0, D(A(K_INT16), A(K_INT8), A(K_INT8), A(K_BYTES))}, {60, 0, D(A(K_INT16), A(K_INT8), A(K_INT8), A(K_B64))},
    {61, 0, D(A(K_B64))}, {62, 0, D(A(K_INT32), A(K_INT16), A(K_BITMAP))},
    {64, 1, D(A(K_INT16), A(K_NAME), A(K_SVCPARAMS))}, {65, 1, D(A(K_INT16), A(K_NAME), A(K_SVCPARAMS))},
    {99, 0, D(A(K_REPSTRING))}, {108, 0, D(A(K_EUI48))}, {109, 0, D(A(K_EUI64))},
    {256, 0, D(A(K_INT16), A(K_INT16), A(K_BYTES_STR))}, {257, 1, D(A(K_INT8), A(K_STRING), A(K_BYTES_STR))},
};
#define DESCRIBED_BELOW 512
static const descriptor_t *described[DESCRIBED_BELOW];

/* decompose.NAME_FIELDS: 'n' a name, 's' a character-string, a digit that many octets */
typedef struct {
    unsigned type;
    const char *layout;
} layout_t;
static const layout_t layouts[] = {
    {2, "n"}, {3, "n"}, {4, "n"}, {5, "n"}, {6, "nn"}, {7, "n"}, {8, "n"}, {9, "n"}, {12, "n"},
    {14, "nn"}, {15, "2n"}, {17, "nn"}, {18, "2n"}, {21, "2n"}, {26, "2nn"}, {36, "2n"}, {33, "6n"},
    {39, "n"}, {35, "4sssn"},
};
static const char *layout_of[DESCRIBED_BELOW];

/* --------------------------------------------------------- scratch space */
/* Reused from call to call (the GIL is held throughout): the names and
 * record data of the RRs kept, decompressed, and where each one is. */
typedef struct {
    Py_ssize_t owner, owner_len, rdata, rdata_len, first;
    unsigned type;
} rr_t;

static u8 *scratch;
static Py_ssize_t scratch_len, scratch_cap;
static rr_t *rrs;
static Py_ssize_t rrs_len, rrs_cap;
static Py_ssize_t *order;
static Py_ssize_t order_cap;

static int reserve(Py_ssize_t more)
{
    if (scratch_len + more <= scratch_cap)
        return 0;
    Py_ssize_t cap = scratch_cap ? scratch_cap : 4096;
    while (cap < scratch_len + more)
        cap *= 2;
    u8 *grown = PyMem_Realloc(scratch, (size_t)cap);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    scratch = grown;
    scratch_cap = cap;
    return 0;
}

static int put(const u8 *src, Py_ssize_t n)
{
    if (reserve(n) < 0)
        return -1;
    memcpy(scratch + scratch_len, src, (size_t)n);
    scratch_len += n;
    return 0;
}

static rr_t *new_rr(void)
{
    if (rrs_len == rrs_cap) {
        Py_ssize_t cap = rrs_cap ? rrs_cap * 2 : 64;
        rr_t *grown = PyMem_Realloc(rrs, (size_t)cap * sizeof(rr_t));
        Py_ssize_t *grown_order = PyMem_Realloc(order, (size_t)cap * sizeof(Py_ssize_t));
        if (grown == NULL || grown_order == NULL) {
            if (grown != NULL)
                rrs = grown;
            if (grown_order != NULL)
                order = grown_order;
            PyErr_NoMemory();
            return NULL;
        }
        rrs = grown;
        order = grown_order;
        rrs_cap = order_cap = cap;
    }
    return &rrs[rrs_len++];
}

/* ---------------------------------------------------------- wdns's rules */
enum { FAULT = -1, NOMEM = -2 };

static inline unsigned be16(const u8 *p) { return (unsigned)p[0] << 8 | p[1]; }

/* dnsmessage.unpack_name: the name at pos, uncompressed, appended to the
 * scratch space; *after is the offset just after it in place */
static int unpack_name(const u8 *w, Py_ssize_t n, Py_ssize_t pos, Py_ssize_t *after)
{
    u8 out[MAX_NAME_LEN];
    Py_ssize_t len = 0, next = -1;
    for (;;) {
        if (pos >= n)
            return FAULT;
        unsigned length = w[pos];
        if (length == 0)
            break;
        if (length >= 0xC0) {
            if (pos + 1 >= n)
                return FAULT;
            Py_ssize_t target = (Py_ssize_t)((length & 0x3F) << 8 | w[pos + 1]);
            if (target >= pos)
                return FAULT;
            if (next < 0)
                next = pos + 2;
            pos = target;
        } else if (length <= 63) {
            if (len + 1 + (Py_ssize_t)length >= MAX_NAME_LEN)
                return FAULT;
            if (pos + 1 + (Py_ssize_t)length > n)
                return FAULT;
            memcpy(out + len, w + pos, 1 + length);
            len += 1 + length;
            pos += 1 + length;
        } else {
            return FAULT;
        }
    }
    out[len++] = 0;
    *after = next < 0 ? pos + 1 : next;
    return put(out, len) < 0 ? NOMEM : 0;
}

static int take(const u8 *w, Py_ssize_t *pos, Py_ssize_t end, Py_ssize_t size)
{
    if (end - *pos < size)
        return FAULT;
    if (put(w + *pos, size) < 0)
        return NOMEM;
    *pos += size;
    return 0;
}

/* dnsmessage._svcparam_fits */
static int svcparam_fits(unsigned key, const u8 *value, Py_ssize_t len)
{
    switch (key) {
    case 1: {
        Py_ssize_t pos = 0;
        while (pos < len)
            pos += 1 + value[pos];
        return len > 0 && pos == len;
    }
    case 0: return len % 2 == 0;
    case 4: return len % 4 == 0;
    case 6: return len % 16 == 0;
    case 2: return len == 0;
    case 3: return len == 2;
    default: return key != 65535;
    }
}

/* one field of dnsmessage._FIELD_READERS; pos < end on entry */
static int read_field(int kind, const u8 *w, Py_ssize_t n, Py_ssize_t *pos, Py_ssize_t end)
{
    int r;
    switch (kind) {
    case K_NAME: {
        Py_ssize_t after;
        if ((r = unpack_name(w, n, *pos, &after)) < 0)
            return r;
        if (after > end)
            return FAULT;
        *pos = after;
        return 0;
    }
    case K_BYTES: case K_B64: case K_BYTES_STR: case K_EDNS_OPTS:
        return take(w, pos, end, end - *pos);
    case K_INT8: return take(w, pos, end, 1);
    case K_INT16: case K_RRTYPE: return take(w, pos, end, 2);
    case K_INT32: case K_IPV4: return take(w, pos, end, 4);
    case K_IPV6: return take(w, pos, end, 16);
    case K_EUI48: return take(w, pos, end, 6);
    case K_EUI64: return take(w, pos, end, 8);
    case K_STRING: case K_SALT: case K_HASH: return take(w, pos, end, 1 + w[*pos]);
    case K_REPSTRING:
        while (*pos < end)
            if ((r = take(w, pos, end, 1 + w[*pos])) < 0)
                return r;
        return 0;
    case K_IPV6PREFIX: {
        unsigned prefix = w[*pos];
        if (prefix > 128)
            return FAULT;
        return take(w, pos, end, 1 + (128 - prefix + 7) / 8);
    }
    case K_BITMAP:
        while (end - *pos >= 2) {
            Py_ssize_t length = w[*pos + 1];
            if (length < 1 || length > 32 || length > end - *pos - 2)
                return FAULT;
            if ((r = take(w, pos, end, 2 + length)) < 0)
                return r;
        }
        return 0;
    case K_SVCPARAMS:
        while (*pos < end) {
            if (end - *pos < 4)
                return FAULT;
            unsigned key = be16(w + *pos);
            Py_ssize_t length = be16(w + *pos + 2);
            if (4 + length > end - *pos)
                return FAULT;
            if (!svcparam_fits(key, w + *pos + 4, length))
                return FAULT;
            if ((r = take(w, pos, end, 4 + length)) < 0)
                return r;
        }
        return 0;
    }
    return FAULT;
}

/* dnsmessage._read_rdata: appended to the scratch space */
static int read_rdata(const u8 *w, Py_ssize_t n, Py_ssize_t pos, Py_ssize_t end, unsigned type, unsigned klass)
{
    const descriptor_t *d = type < DESCRIBED_BELOW ? described[type] : NULL;
    if (d == NULL || (d->in_only && klass != CLASS_IN))
        return put(w + pos, end - pos) < 0 ? NOMEM : 0;
    for (const char *k = d->kinds; *k; k++) {
        if (pos == end)
            break;
        int r = read_field(*k - 'a', w, n, &pos, end);
        if (r < 0)
            return r;
    }
    return pos == end ? 0 : FAULT;
}

static inline u8 lower(u8 c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

static void lower_span(u8 *p, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        p[i] = lower(p[i]);
}

/* decompose.canonical_rdata, in place */
static int canonical(unsigned type, u8 *d, Py_ssize_t len)
{
    const char *layout = type < DESCRIBED_BELOW ? layout_of[type] : NULL;
    if (layout == NULL)
        return 0;
    Py_ssize_t pos = 0, end;
    for (const char *part = layout; *part; part++) {
        if (*part == 'n') {
            end = pos;
            while (end < len && d[end])
                end += d[end] + 1;
            if (end >= len)
                return FAULT;
            end += 1;
            lower_span(d + pos, end - pos);
        } else if (*part == 's') {
            end = pos + 1 + (pos < len ? d[pos] : 0);
        } else {
            end = pos + (*part - '0');
        }
        if (end > len)
            return FAULT;
        pos = end;
    }
    return 0;
}

static inline int not_data(unsigned type) { return type == 0 || type == TYPE_OPT || (type >= 128 && type <= 255); }

/* dnsmessage.decode's walk over the RRs; each answer, authority and
 * additional RR that decompose keeps is noted in rrs[] */
static int read_message(const u8 *w, Py_ssize_t n, int *not_canonical)
{
    Py_ssize_t pos = DNS_HEADER_LEN;
    for (int section = 0; section < 4; section++) {
        unsigned count = be16(w + 4 + 2 * section);
        for (unsigned i = 0; i < count; i++) {
            if (pos == n)
                return 0;
            Py_ssize_t owner = scratch_len, after;
            int r = unpack_name(w, n, pos, &after);
            if (r < 0)
                return r;
            Py_ssize_t owner_len = scratch_len - owner;
            pos = after;
            if (pos + (section == 0 ? 4 : 10) > n)
                return FAULT;
            unsigned type = be16(w + pos), klass = be16(w + pos + 2);
            if (section == 0) {
                scratch_len = owner;
                pos += 4;
                continue;
            }
            Py_ssize_t rdlen = be16(w + pos + 8), start = pos + 10;
            if (start + rdlen > n)
                return FAULT;
            Py_ssize_t rdata = scratch_len;
            if ((r = read_rdata(w, n, start, start + rdlen, type, klass)) < 0)
                return r;
            pos = start + rdlen;
            if (klass != CLASS_IN || not_data(type)) {
                scratch_len = owner;
                continue;
            }
            lower_span(scratch + owner, owner_len);
            if (canonical(type, scratch + rdata, scratch_len - rdata) < 0) {
                *not_canonical = 1; /* undecodable, once the header has had its say */
                scratch_len = owner;
                continue;
            }
            rr_t *rr = new_rr();
            if (rr == NULL)
                return NOMEM;
            *rr = (rr_t){owner, owner_len, rdata, scratch_len - rdata, rrs_len - 1, type};
        }
    }
    return 0;
}

/* ------------------------------------------------------------- the RRsets */
static int compare_bytes(const u8 *a, Py_ssize_t an, const u8 *b, Py_ssize_t bn)
{
    int c = memcmp(a, b, (size_t)(an < bn ? an : bn));
    return c ? c : (an > bn) - (an < bn);
}

/* by (owner, type), then record data as Python sorts bytes */
static int by_rrset_then_data(const void *x, const void *y)
{
    const rr_t *a = &rrs[*(const Py_ssize_t *)x], *b = &rrs[*(const Py_ssize_t *)y];
    int c = compare_bytes(scratch + a->owner, a->owner_len, scratch + b->owner, b->owner_len);
    if (c)
        return c;
    if (a->type != b->type)
        return a->type < b->type ? -1 : 1;
    c = compare_bytes(scratch + a->rdata, a->rdata_len, scratch + b->rdata, b->rdata_len);
    return c ? c : (a->first > b->first) - (a->first < b->first);
}

static inline int same_rrset(const rr_t *a, const rr_t *b)
{
    return a->type == b->type && a->owner_len == b->owner_len
           && !memcmp(scratch + a->owner, scratch + b->owner, (size_t)a->owner_len);
}

static inline int same_data(const rr_t *a, const rr_t *b)
{
    return a->rdata_len == b->rdata_len && !memcmp(scratch + a->rdata, scratch + b->rdata, (size_t)a->rdata_len);
}

typedef struct {
    Py_ssize_t start, end, first; /* its RRs in order[start:end]; where it first appeared */
} group_t;

static int by_first(const void *x, const void *y)
{
    const group_t *a = x, *b = y;
    return (a->first > b->first) - (a->first < b->first);
}

static PyObject *rrset_tuple(const group_t *g)
{
    Py_ssize_t count = 1;
    for (Py_ssize_t i = g->start + 1; i < g->end; i++)
        count += !same_data(&rrs[order[i - 1]], &rrs[order[i]]);
    PyObject *datas = PyTuple_New(count);
    if (datas == NULL)
        return NULL;
    Py_ssize_t k = 0;
    for (Py_ssize_t i = g->start; i < g->end; i++) {
        const rr_t *rr = &rrs[order[i]];
        if (i > g->start && same_data(&rrs[order[i - 1]], rr))
            continue;
        PyObject *data = PyBytes_FromStringAndSize((const char *)scratch + rr->rdata, rr->rdata_len);
        if (data == NULL) {
            Py_DECREF(datas);
            return NULL;
        }
        PyTuple_SET_ITEM(datas, k++, data);
    }
    const rr_t *rr = &rrs[order[g->start]];
    PyObject *owner = PyBytes_FromStringAndSize((const char *)scratch + rr->owner, rr->owner_len);
    PyObject *type = PyLong_FromUnsignedLong(rr->type);
    if (owner == NULL || type == NULL) {
        Py_XDECREF(owner);
        Py_XDECREF(type);
        Py_DECREF(datas);
        return NULL;
    }
    PyObject *rrset = PyTuple_New(3);
    if (rrset == NULL) {
        Py_DECREF(owner);
        Py_DECREF(type);
        Py_DECREF(datas);
        return NULL;
    }
    PyTuple_SET_ITEM(rrset, 0, owner);
    PyTuple_SET_ITEM(rrset, 1, type);
    PyTuple_SET_ITEM(rrset, 2, datas);
    return rrset;
}

static PyObject *rrsets_tuple(void)
{
    for (Py_ssize_t i = 0; i < rrs_len; i++)
        order[i] = i;
    qsort(order, (size_t)rrs_len, sizeof(Py_ssize_t), by_rrset_then_data);
    group_t *groups = PyMem_Malloc((size_t)(rrs_len ? rrs_len : 1) * sizeof(group_t));
    if (groups == NULL)
        return PyErr_NoMemory();
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < rrs_len; i++) {
        const rr_t *rr = &rrs[order[i]];
        if (i == 0 || !same_rrset(&rrs[order[i - 1]], rr))
            groups[count++] = (group_t){i, i + 1, rr->first};
        else {
            groups[count - 1].end = i + 1;
            if (rr->first < groups[count - 1].first)
                groups[count - 1].first = rr->first;
        }
    }
    qsort(groups, (size_t)count, sizeof(group_t), by_first);
    PyObject *out = PyTuple_New(count);
    if (out != NULL)
        for (Py_ssize_t g = 0; g < count; g++) {
            PyObject *rrset = rrset_tuple(&groups[g]);
            if (rrset == NULL) {
                Py_CLEAR(out);
                break;
            }
            PyTuple_SET_ITEM(out, g, rrset);
        }
    PyMem_Free(groups);
    return out;
}

int decompose(const unsigned char *wire, Py_ssize_t len, PyObject **out)
{
    *out = NULL;
    if (len < DNS_HEADER_LEN)
        return DC_UNDECODABLE;
    scratch_len = rrs_len = 0;
    int not_canonical = 0; /* decompose.canonical_rdata refuses a record's data */
    int r = read_message(wire, len, &not_canonical);
    if (r == NOMEM)
        return DC_ERROR;
    if (r == FAULT)
        return DC_UNDECODABLE;
    unsigned flags = be16(wire + 2);
    if (!(flags & FLAG_QR))
        return DC_NOT_RESPONSE;
    if (flags & FLAG_TC)
        return DC_TRUNCATED;
    if ((flags >> 11) & 0xF)
        return DC_NOT_QUERY;
    if (not_canonical)
        return DC_UNDECODABLE;
    *out = rrsets_tuple();
    return *out == NULL ? DC_ERROR : DC_OK;
}

/* decompose.NAME_FIELDS[type] as _rows.c reads it ('n' a name, 's' a string, a digit that many octets), or NULL */
const char *decompose_layout(unsigned type)
{
    return type < DESCRIBED_BELOW ? layout_of[type] : NULL;
}

int decompose_init(void)
{
    for (size_t i = 0; i < sizeof descriptors / sizeof descriptors[0]; i++)
        described[descriptors[i].type] = &descriptors[i];
    for (size_t i = 0; i < sizeof layouts / sizeof layouts[0]; i++)
        layout_of[layouts[i].type] = layouts[i].layout;
    return 0;
}

/* dict[key] = value, both new references (consumed); -1 with an exception */
static int set_new(PyObject *dict, PyObject *key, PyObject *value)
{
    int r = key != NULL && value != NULL ? PyDict_SetItem(dict, key, value) : -1;
    Py_XDECREF(key);
    Py_XDECREF(value);
    return r;
}

/* a tuple of the characters of `text`, each through `item` */
static PyObject *tuple_of_chars(const char *text, PyObject *(*item)(char))
{
    PyObject *t = PyTuple_New((Py_ssize_t)strlen(text));
    for (Py_ssize_t j = 0; t != NULL && text[j]; j++) {
        PyObject *value = item(text[j]);
        if (value == NULL)
            Py_CLEAR(t);
        else
            PyTuple_SET_ITEM(t, j, value);
    }
    return t;
}

static PyObject *kind_number(char c) { return PyLong_FromLong(c - 'a'); }

static PyObject *layout_part(char c)
{
    return c == 'n' || c == 's' ? PyUnicode_FromStringAndSize(&c, 1) : PyLong_FromLong(c - '0');
}

/* the tables as Python values, for the tests that hold them to dnsmessage and decompose */
PyObject *decompose_tables(void)
{
    PyObject *desc = PyDict_New(), *names = PyDict_New();
    if (desc == NULL || names == NULL)
        goto fail;
    for (size_t i = 0; i < sizeof descriptors / sizeof descriptors[0]; i++) {
        PyObject *kinds = tuple_of_chars(descriptors[i].kinds, kind_number);
        PyObject *value = kinds == NULL ? NULL : Py_BuildValue("(iN)", descriptors[i].in_only, kinds);
        if (set_new(desc, PyLong_FromUnsignedLong(descriptors[i].type), value) < 0)
            goto fail;
    }
    for (size_t i = 0; i < sizeof layouts / sizeof layouts[0]; i++)
        if (set_new(names, PyLong_FromUnsignedLong(layouts[i].type), tuple_of_chars(layouts[i].layout, layout_part)) < 0)
            goto fail;
    return Py_BuildValue("(NN)", desc, names);
fail:
    Py_XDECREF(desc);
    Py_XDECREF(names);
    return NULL;
}
