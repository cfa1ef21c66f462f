/*
 * sensor._cborpack: the CBOR spool's common record, encoded in C.
 *
 * Why C: the UDP pair (one datagram each way, record.PAIR_FIELDS) is
 * nearly every record, and its struct-based Python encoder cost 0.9
 * CPU-s per million packets of the benchmark on the capture thread
 * (README, "Benchmark"). This writes the same bytes: a map of 18 items in
 * key order, heads of fixed width (valid CBOR that every decoder reads;
 * only "preferred serialization" would pick shorter ones). Every other
 * record, or a pair with a value outside those heads, is encoded by the
 * callable passed in (spool.py: cbor2). tests/test_cborpack.py states the
 * layout in Python and holds this module to it and to cbor2's decoding.
 *
 * encode(records, general) -> bytes: the records' CBOR items, one after
 * another.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_record_fields.h"

/* record.RecordType.UDP_QUERY_RESPONSE (spool.py refuses to import with another) */
#define TYPE_UDP_QUERY_RESPONSE 1
#define PAIR_SIZE 18 /* the keys read below, so a record of that size has no other */

/* CBOR heads (RFC 8949): major type << 5 | additional information */
#define UINT_U16 0x19
#define UINT_U32 0x1a
#define BYTES_4 0x44
#define BYTES_16 0x50
#define BYTES_U8 0x58
#define BYTES_U16 0x59
#define ARRAY_1 0x81
#define MAP_18 (0xa0 + PAIR_SIZE)
#define IMMEDIATE_LIMIT 24 /* an unsigned int below this is its own head */

typedef struct {
    char *data;
    Py_ssize_t size, used;
} buffer_t;

static int reserve(buffer_t *b, Py_ssize_t more)
{
    if (b->used + more <= b->size)
        return 0;
    Py_ssize_t size = b->size ? b->size : 1 << 16;
    while (size < b->used + more)
        size *= 2;
    char *data = PyMem_Realloc(b->data, (size_t)size);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->size = size;
    return 0;
}

static inline void put(buffer_t *b, unsigned char c) { b->data[b->used++] = (char)c; }

static inline void put16(buffer_t *b, uint64_t v)
{
    put(b, (unsigned char)(v >> 8));
    put(b, (unsigned char)v);
}

static inline void put32(buffer_t *b, uint64_t v)
{
    put16(b, (unsigned)(v >> 16) & 0xFFFF);
    put16(b, (unsigned)v & 0xFFFF);
}

static inline void put_bytes(buffer_t *b, const char *src, Py_ssize_t n)
{
    memcpy(b->data + b->used, src, (size_t)n);
    b->used += n;
}

static int bytes_below(PyObject *obj, Py_ssize_t limit)
{
    return obj != NULL && PyBytes_CheckExact(obj) && PyBytes_GET_SIZE(obj) < limit;
}

typedef struct {
    uint64_t type, proto, query_port, response_port, id, qtype, qclass, rcode, checksum;
    uint64_t query_sec, query_nsec, response_sec, response_nsec;
    PyObject *query_ip, *response_ip, *qname, *query, *response;
} pair_t;

/* 1 when the record is a pair whose every value fits the fixed layout */
static int read_pair(PyObject *r, pair_t *p)
{
    if (PyDict_GET_SIZE(r) != PAIR_SIZE || !uint_below(field(r, 1), IMMEDIATE_LIMIT, &p->type)
        || p->type != TYPE_UDP_QUERY_RESPONSE)
        return 0;
    p->query_ip = field(r, 2);
    p->response_ip = field(r, 3);
    p->qname = field(r, 8);
    p->query = only(r, 12);
    p->response = only(r, 15);
    if (!bytes_below(p->query_ip, 17) || !bytes_below(p->response_ip, 17) || !bytes_below(p->qname, 256)
        || !bytes_below(p->query, 65536) || !bytes_below(p->response, 65536))
        return 0;
    Py_ssize_t size = PyBytes_GET_SIZE(p->query_ip);
    if ((size != 4 && size != 16) || PyBytes_GET_SIZE(p->response_ip) != size)
        return 0;
    return uint_below(field(r, 4), IMMEDIATE_LIMIT, &p->proto)
        && uint_below(field(r, 5), 1 << 16, &p->query_port) && uint_below(field(r, 6), 1 << 16, &p->response_port)
        && uint_below(field(r, 7), 1 << 16, &p->id) && uint_below(field(r, 9), 1 << 16, &p->qtype)
        && uint_below(field(r, 10), 1 << 16, &p->qclass) && uint_below(field(r, 11), IMMEDIATE_LIMIT, &p->rcode)
        && uint_below(only(r, 13), 1ull << 32, &p->query_sec) && uint_below(only(r, 14), 1ull << 32, &p->query_nsec)
        && uint_below(only(r, 16), 1ull << 32, &p->response_sec)
        && uint_below(only(r, 17), 1ull << 32, &p->response_nsec)
        && uint_below(field(r, 21), IMMEDIATE_LIMIT, &p->checksum);
}

static int write_pair(buffer_t *b, const pair_t *p)
{
    Py_ssize_t ip = PyBytes_GET_SIZE(p->query_ip), qname = PyBytes_GET_SIZE(p->qname);
    Py_ssize_t query = PyBytes_GET_SIZE(p->query), response = PyBytes_GET_SIZE(p->response);
    if (reserve(b, 128 + 2 * ip + qname + query + response) < 0)
        return -1;
    unsigned char ip_head = ip == 4 ? BYTES_4 : BYTES_16;
    put(b, MAP_18);
    put(b, 1); put(b, (unsigned char)p->type);
    put(b, 2); put(b, ip_head); put_bytes(b, PyBytes_AS_STRING(p->query_ip), ip);
    put(b, 3); put(b, ip_head); put_bytes(b, PyBytes_AS_STRING(p->response_ip), ip);
    put(b, 4); put(b, (unsigned char)p->proto);
    put(b, 5); put(b, UINT_U16); put16(b, p->query_port);
    put(b, 6); put(b, UINT_U16); put16(b, p->response_port);
    put(b, 7); put(b, UINT_U16); put16(b, p->id);
    put(b, 8); put(b, BYTES_U8); put(b, (unsigned char)qname); put_bytes(b, PyBytes_AS_STRING(p->qname), qname);
    put(b, 9); put(b, UINT_U16); put16(b, p->qtype);
    put(b, 10); put(b, UINT_U16); put16(b, p->qclass);
    put(b, 11); put(b, (unsigned char)p->rcode);
    put(b, 12); put(b, ARRAY_1); put(b, BYTES_U16); put16(b, (unsigned)query);
    put_bytes(b, PyBytes_AS_STRING(p->query), query);
    put(b, 13); put(b, ARRAY_1); put(b, UINT_U32); put32(b, p->query_sec);
    put(b, 14); put(b, ARRAY_1); put(b, UINT_U32); put32(b, p->query_nsec);
    put(b, 15); put(b, ARRAY_1); put(b, BYTES_U16); put16(b, (unsigned)response);
    put_bytes(b, PyBytes_AS_STRING(p->response), response);
    put(b, 16); put(b, ARRAY_1); put(b, UINT_U32); put32(b, p->response_sec);
    put(b, 17); put(b, ARRAY_1); put(b, UINT_U32); put32(b, p->response_nsec);
    put(b, 21); put(b, (unsigned char)p->checksum);
    return 0;
}

static int write_general(buffer_t *b, PyObject *general, PyObject *record)
{
    Py_INCREF(record); /* the callable may change the list that lends it */
    PyObject *encoded = PyObject_CallOneArg(general, record);
    Py_DECREF(record);
    if (encoded == NULL)
        return -1;
    if (!PyBytes_Check(encoded)) {
        PyErr_SetString(PyExc_TypeError, "the general encoder returned something other than bytes");
        Py_DECREF(encoded);
        return -1;
    }
    int result = reserve(b, PyBytes_GET_SIZE(encoded));
    if (result == 0)
        put_bytes(b, PyBytes_AS_STRING(encoded), PyBytes_GET_SIZE(encoded));
    Py_DECREF(encoded);
    return result;
}

static PyObject *encode(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *records, *general;
    if (!PyArg_ParseTuple(args, "O!O", &PyList_Type, &records, &general))
        return NULL;
    buffer_t b = {NULL, 0, 0};
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(records); i++) {
        PyObject *record = PyList_GET_ITEM(records, i);
        pair_t p;
        int ok;
        if (PyDict_CheckExact(record) && read_pair(record, &p))
            ok = write_pair(&b, &p);
        else
            ok = PyErr_Occurred() ? -1 : write_general(&b, general, record);
        if (ok < 0) {
            PyMem_Free(b.data);
            return NULL;
        }
    }
    PyObject *out = PyBytes_FromStringAndSize(b.data ? b.data : "", b.used);
    PyMem_Free(b.data);
    return out;
}

static PyMethodDef methods[] = {
    {"encode", encode, METH_VARARGS, "encode(records, general) -> the records' CBOR items, one after another."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sensor._cborpack",
    "The CBOR spool's common record, encoded in C (see the source's header).", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__cborpack(void)
{
    if (field_keys_init() < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "TYPE_UDP_QUERY_RESPONSE", TYPE_UDP_QUERY_RESPONSE) < 0
        || PyModule_AddIntConstant(m, "PAIR_SIZE", PAIR_SIZE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
