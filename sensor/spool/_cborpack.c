/*
 * sensor.spool._cborpack: the CBOR spool's common record, encoded in C.
 *
 * Why C: the UDP pair (one datagram each way, record.PAIR_FIELDS) is
 * nearly every record, and encoding it in Python was a large part of
 * the capture thread's time. This writes the same bytes: a map of the 18
 * items of record.PAIR_FIELDS in key order, heads of fixed width (valid CBOR that every decoder reads;
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

/* record.RecordType.UDP_QUERY_RESPONSE, and the field numbers and pair
 * shape of _record_fields.h: record.check_compiled refuses this module
 * when they are not record.py's (spool.py calls it at import). A record of
 * PAIR_SIZE with the fields read below has no other. */
#define TYPE_UDP_QUERY_RESPONSE 1

/* CBOR heads (RFC 8949): major type << 5 | additional information */
#define UINT_U16 0x19
#define UINT_U32 0x1a
#define BYTES_4 0x44
#define BYTES_16 0x50
#define BYTES_U8 0x58
#define BYTES_U16 0x59
#define ARRAY_1 0x81
#define MAP_OF_PAIR (0xa0 + PAIR_SIZE)
#define IMMEDIATE_LIMIT 24 /* an unsigned int below this is its own head */
/* a field number is a map key of one octet, its own head */
_Static_assert(FIELD_COUNT <= IMMEDIATE_LIMIT, "field numbers must be CBOR immediates");
_Static_assert(PAIR_SIZE < IMMEDIATE_LIMIT, "the pair's map head must be one octet");

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
    if (PyDict_GET_SIZE(r) != PAIR_SIZE || !uint_below(field(r, F_TYPE), IMMEDIATE_LIMIT, &p->type)
        || p->type != TYPE_UDP_QUERY_RESPONSE)
        return 0;
    p->query_ip = field(r, F_QUERY_IP);
    p->response_ip = field(r, F_RESPONSE_IP);
    p->qname = field(r, F_QNAME);
    p->query = only(r, F_QUERY_PACKET);
    p->response = only(r, F_RESPONSE_PACKET);
    if (!bytes_below(p->query_ip, 17) || !bytes_below(p->response_ip, 17) || !bytes_below(p->qname, 256)
        || !bytes_below(p->query, 65536) || !bytes_below(p->response, 65536))
        return 0;
    Py_ssize_t size = PyBytes_GET_SIZE(p->query_ip);
    if ((size != 4 && size != 16) || PyBytes_GET_SIZE(p->response_ip) != size)
        return 0;
    return uint_below(field(r, F_PROTO), IMMEDIATE_LIMIT, &p->proto)
        && uint_below(field(r, F_QUERY_PORT), 1 << 16, &p->query_port)
        && uint_below(field(r, F_RESPONSE_PORT), 1 << 16, &p->response_port)
        && uint_below(field(r, F_ID), 1 << 16, &p->id) && uint_below(field(r, F_QTYPE), 1 << 16, &p->qtype)
        && uint_below(field(r, F_QCLASS), 1 << 16, &p->qclass)
        && uint_below(field(r, F_RCODE), IMMEDIATE_LIMIT, &p->rcode)
        && uint_below(only(r, F_QUERY_TIME_SEC), 1ull << 32, &p->query_sec)
        && uint_below(only(r, F_QUERY_TIME_NSEC), 1ull << 32, &p->query_nsec)
        && uint_below(only(r, F_RESPONSE_TIME_SEC), 1ull << 32, &p->response_sec)
        && uint_below(only(r, F_RESPONSE_TIME_NSEC), 1ull << 32, &p->response_nsec)
        && uint_below(field(r, F_UDP_CHECKSUM), IMMEDIATE_LIMIT, &p->checksum);
}

static int write_pair(buffer_t *b, const pair_t *p)
{
    Py_ssize_t ip = PyBytes_GET_SIZE(p->query_ip), qname = PyBytes_GET_SIZE(p->qname);
    Py_ssize_t query = PyBytes_GET_SIZE(p->query), response = PyBytes_GET_SIZE(p->response);
    if (reserve(b, 128 + 2 * ip + qname + query + response) < 0)
        return -1;
    unsigned char ip_head = ip == 4 ? BYTES_4 : BYTES_16;
    put(b, MAP_OF_PAIR);
    put(b, F_TYPE); put(b, (unsigned char)p->type);
    put(b, F_QUERY_IP); put(b, ip_head); put_bytes(b, PyBytes_AS_STRING(p->query_ip), ip);
    put(b, F_RESPONSE_IP); put(b, ip_head); put_bytes(b, PyBytes_AS_STRING(p->response_ip), ip);
    put(b, F_PROTO); put(b, (unsigned char)p->proto);
    put(b, F_QUERY_PORT); put(b, UINT_U16); put16(b, p->query_port);
    put(b, F_RESPONSE_PORT); put(b, UINT_U16); put16(b, p->response_port);
    put(b, F_ID); put(b, UINT_U16); put16(b, p->id);
    put(b, F_QNAME); put(b, BYTES_U8); put(b, (unsigned char)qname);
    put_bytes(b, PyBytes_AS_STRING(p->qname), qname);
    put(b, F_QTYPE); put(b, UINT_U16); put16(b, p->qtype);
    put(b, F_QCLASS); put(b, UINT_U16); put16(b, p->qclass);
    put(b, F_RCODE); put(b, (unsigned char)p->rcode);
    put(b, F_QUERY_PACKET); put(b, ARRAY_1); put(b, BYTES_U16); put16(b, (unsigned)query);
    put_bytes(b, PyBytes_AS_STRING(p->query), query);
    put(b, F_QUERY_TIME_SEC); put(b, ARRAY_1); put(b, UINT_U32); put32(b, p->query_sec);
    put(b, F_QUERY_TIME_NSEC); put(b, ARRAY_1); put(b, UINT_U32); put32(b, p->query_nsec);
    put(b, F_RESPONSE_PACKET); put(b, ARRAY_1); put(b, BYTES_U16); put16(b, (unsigned)response);
    put_bytes(b, PyBytes_AS_STRING(p->response), response);
    put(b, F_RESPONSE_TIME_SEC); put(b, ARRAY_1); put(b, UINT_U32); put32(b, p->response_sec);
    put(b, F_RESPONSE_TIME_NSEC); put(b, ARRAY_1); put(b, UINT_U32); put32(b, p->response_nsec);
    put(b, F_UDP_CHECKSUM); put(b, (unsigned char)p->checksum);
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
    PyModuleDef_HEAD_INIT, "sensor.spool._cborpack",
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
        || add_record_layout(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
