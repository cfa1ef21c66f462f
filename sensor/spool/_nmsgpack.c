/*
 * sensor.spool._nmsgpack: the common records of the NMSG spool, packed in C.
 *
 * Why C: encoding a record (its DnsQR message, the NmsgPayload around it
 * and the payload's CRC32C) was the second-largest step of the sensor's
 * CPU after matching, 3.5 microseconds of Python a record, paid on the
 * capture thread (bench/RESULTS.md). This module does that step for
 * the two shapes that make nearly every record, the UDP pair and the
 * unanswered query of one datagram each (record.PAIR_FIELDS; matcher._leftover),
 * and leaves every other record to Python: `pack` stops at it and says so.
 *
 * The layout is nmsg.Container.add_message's around dnsqr.encode's,
 * byte for byte: tests compare the two on every record shape and on the
 * benchmark's records, and read the result back with the protobuf library.
 * Field numbers are record.Field's (_record_fields.h, checked at import by
 * record.check_compiled); the tags below are made from them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_crc32c.h"
#include "_record_fields.h"

/* record.RecordType values of the two shapes (nmsg.py refuses to import with others) */
#define TYPE_UDP_UNANSWERED_QUERY 2
#define TYPE_UDP_QUERY_RESPONSE 1

/* A record's encoded size is bounded by its two datagrams (each below 64 KiB
 * in the fast shapes: one IP datagram each) plus names and fixed fields. */
#define MAX_PAYLOAD (3 * 65536 + 1024)

enum { DONE = 0, FULL = 1, ODD = 2 };

/* -------------------------------------------------------------- writing */
typedef struct {
    unsigned char *p;
} out_t;

static inline void put_byte(out_t *o, unsigned char b) { *o->p++ = b; }

static inline void put_varint(out_t *o, uint64_t v)
{
    while (v >= 0x80) {
        *o->p++ = (unsigned char)(v & 0x7F) | 0x80;
        v >>= 7;
    }
    *o->p++ = (unsigned char)v;
}

static inline void put_bytes(out_t *o, const void *src, Py_ssize_t n)
{
    memcpy(o->p, src, (size_t)n);
    o->p += n;
}

static inline void put_le32(out_t *o, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        *o->p++ = (unsigned char)(v >> (8 * i));
}

static inline int varint_size(uint64_t v)
{
    int n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* ----------------------------------------------------- reading a record */
/* Each getter returns 0 when the value is not what the fast path takes;
 * the record then goes to Python, which encodes anything. */

static int get_uint(PyObject *record, int number, uint64_t limit, uint64_t *value)
{
    return uint_below(field(record, number), limit, value);
}

/* bytes only: the matcher's addresses, names and datagrams are bytes */
static int get_bytes(PyObject *obj, const char **data, Py_ssize_t *size)
{
    if (obj == NULL || !PyBytes_CheckExact(obj))
        return 0;
    *data = PyBytes_AS_STRING(obj);
    *size = PyBytes_GET_SIZE(obj);
    return *size < 65536;
}

static int get_time(PyObject *obj, int64_t *sec)
{
    if (obj == NULL || !PyLong_Check(obj) || PyBool_Check(obj))
        return 0;
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (overflow)
        return 0;
    *sec = v;
    return 1;
}

/* nanoseconds: an sfixed32 in DnsQR and a fixed32 in the payload, so the
 * range both take */
static int get_nsec(PyObject *obj, uint32_t *nsec)
{
    uint64_t v;
    if (!uint_below(obj, (uint64_t)INT32_MAX + 1, &v))
        return 0;
    *nsec = (uint32_t)v;
    return 1;
}

typedef struct {
    uint64_t kind, proto, query_port, response_port, id, qtype, qclass, rcode, checksum;
    const char *query_ip, *response_ip, *qname, *query, *response;
    Py_ssize_t query_ip_len, response_ip_len, qname_len, query_len, response_len;
    int64_t query_sec, response_sec;
    uint32_t query_nsec, response_nsec;
    double timeout;
} shape_t;

/* 1 when the message fits `message` in pack: its blobs, and its tags,
 * varints and fixed fields (under 100 octets) with room to spare */
static int fits(const shape_t *s)
{
    return s->query_ip_len + s->response_ip_len + s->qname_len + s->query_len + s->response_len + 512
        <= MAX_PAYLOAD;
}

/* 1 when the record is a pair or an unanswered query this module encodes */
static int read_shape(PyObject *record, shape_t *s)
{
    s->response_len = 0;
    Py_ssize_t size = PyDict_GET_SIZE(record);
    if (!get_uint(record, F_TYPE, 1u << 16, &s->kind))
        return 0;
    if (s->kind == TYPE_UDP_QUERY_RESPONSE) {
        if (size != PAIR_SIZE)
            return 0;
    } else if (s->kind != TYPE_UDP_UNANSWERED_QUERY || size != UNANSWERED_SIZE) {
        return 0;
    }
    if (!get_bytes(field(record, F_QUERY_IP), &s->query_ip, &s->query_ip_len)
        || !get_bytes(field(record, F_RESPONSE_IP), &s->response_ip, &s->response_ip_len)
        || !get_uint(record, F_PROTO, 1u << 16, &s->proto)
        || !get_uint(record, F_QUERY_PORT, 1u << 16, &s->query_port)
        || !get_uint(record, F_RESPONSE_PORT, 1u << 16, &s->response_port)
        || !get_uint(record, F_ID, 1u << 16, &s->id) || !get_bytes(field(record, F_QNAME), &s->qname, &s->qname_len)
        || !get_uint(record, F_QTYPE, 1u << 16, &s->qtype) || !get_uint(record, F_QCLASS, 1u << 16, &s->qclass)
        || !get_bytes(only(record, F_QUERY_PACKET), &s->query, &s->query_len)
        || !get_time(only(record, F_QUERY_TIME_SEC), &s->query_sec)
        || !get_nsec(only(record, F_QUERY_TIME_NSEC), &s->query_nsec))
        return 0;
    if (s->kind == TYPE_UDP_UNANSWERED_QUERY) {
        PyObject *timeout = field(record, F_TIMEOUT);
        if (timeout == NULL || !PyFloat_CheckExact(timeout))
            return 0;
        s->timeout = PyFloat_AS_DOUBLE(timeout);
        return fits(s);
    }
    return get_uint(record, F_RCODE, 1u << 16, &s->rcode)
        && get_bytes(only(record, F_RESPONSE_PACKET), &s->response, &s->response_len)
        && fits(s)
        && get_time(only(record, F_RESPONSE_TIME_SEC), &s->response_sec)
        && get_nsec(only(record, F_RESPONSE_TIME_NSEC), &s->response_nsec)
        && get_uint(record, F_UDP_CHECKSUM, 1u << 16, &s->checksum);
}

/* protobuf wire types, and a field's key (its tag) as the varint it is */
enum { WIRE_VARINT = 0, WIRE_FIXED64 = 1, WIRE_BYTES = 2, WIRE_FIXED32 = 5 };
#define put_tag(o, number, wire) put_varint((o), (uint64_t)(number) << 3 | (wire))

/* The DnsQR message, fields in number order as dnsqr.encode writes them
 * (its field numbers are record.Field's). */
static void put_dnsqr(out_t *o, const shape_t *s)
{
    put_tag(o, F_TYPE, WIRE_VARINT); put_varint(o, s->kind);
    put_tag(o, F_QUERY_IP, WIRE_BYTES); put_varint(o, (uint64_t)s->query_ip_len);
    put_bytes(o, s->query_ip, s->query_ip_len);
    put_tag(o, F_RESPONSE_IP, WIRE_BYTES); put_varint(o, (uint64_t)s->response_ip_len);
    put_bytes(o, s->response_ip, s->response_ip_len);
    put_tag(o, F_PROTO, WIRE_VARINT); put_varint(o, s->proto);
    put_tag(o, F_QUERY_PORT, WIRE_VARINT); put_varint(o, s->query_port);
    put_tag(o, F_RESPONSE_PORT, WIRE_VARINT); put_varint(o, s->response_port);
    put_tag(o, F_ID, WIRE_VARINT); put_varint(o, s->id);
    put_tag(o, F_QNAME, WIRE_BYTES); put_varint(o, (uint64_t)s->qname_len); put_bytes(o, s->qname, s->qname_len);
    put_tag(o, F_QTYPE, WIRE_VARINT); put_varint(o, s->qtype);
    put_tag(o, F_QCLASS, WIRE_VARINT); put_varint(o, s->qclass);
    if (s->kind == TYPE_UDP_QUERY_RESPONSE) {
        put_tag(o, F_RCODE, WIRE_VARINT); put_varint(o, s->rcode);
    }
    put_tag(o, F_QUERY_PACKET, WIRE_BYTES); put_varint(o, (uint64_t)s->query_len); put_bytes(o, s->query, s->query_len);
    /* int64: negative as 64-bit two's complement */
    put_tag(o, F_QUERY_TIME_SEC, WIRE_VARINT); put_varint(o, (uint64_t)s->query_sec);
    put_tag(o, F_QUERY_TIME_NSEC, WIRE_FIXED32); put_le32(o, s->query_nsec);
    if (s->kind == TYPE_UDP_UNANSWERED_QUERY) {
        uint64_t bits;
        memcpy(&bits, &s->timeout, 8);
        put_tag(o, F_TIMEOUT, WIRE_FIXED64);
        for (int i = 0; i < 8; i++)
            put_byte(o, (unsigned char)(bits >> (8 * i)));
        return;
    }
    put_tag(o, F_RESPONSE_PACKET, WIRE_BYTES); put_varint(o, (uint64_t)s->response_len);
    put_bytes(o, s->response, s->response_len);
    put_tag(o, F_RESPONSE_TIME_SEC, WIRE_VARINT); put_varint(o, (uint64_t)s->response_sec);
    put_tag(o, F_RESPONSE_TIME_NSEC, WIRE_FIXED32); put_le32(o, s->response_nsec);
    put_tag(o, F_UDP_CHECKSUM, WIRE_VARINT); put_varint(o, s->checksum);
}

static int append(PyObject *array, const unsigned char *data, Py_ssize_t n)
{
    Py_ssize_t old = PyByteArray_GET_SIZE(array);
    if (PyByteArray_Resize(array, old + n) < 0)
        return -1;
    memcpy(PyByteArray_AS_STRING(array) + old, data, (size_t)n);
    return 0;
}

/* pack(records, start, entries, crcs, trailer, count, estimate, size)
 *   -> (index, count, estimate, status)
 *
 * Appends the payload entry and CRC entry of records[start:] to the two
 * bytearrays of an nmsg.Container (count and estimate are its own), as
 * Container.add_message does, until the records end (status DONE), the
 * next one must open a new container (FULL) or is not a shape this
 * module encodes (ODD); `index` is that record's. */
static PyObject *pack(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *records, *entries, *crcs;
    Py_ssize_t start, count, estimate, size;
    const char *trailer;
    Py_ssize_t trailer_len;
    if (!PyArg_ParseTuple(args, "O!nO!O!y#nnn", &PyList_Type, &records, &start, &PyByteArray_Type, &entries,
                          &PyByteArray_Type, &crcs, &trailer, &trailer_len, &count, &estimate, &size))
        return NULL;
    if (trailer_len > 64) {
        PyErr_SetString(PyExc_ValueError, "payload trailer longer than its three id fields can be");
        return NULL;
    }
    if (start < 0) {
        PyErr_SetString(PyExc_ValueError, "start is negative");
        return NULL;
    }
    /* on an error the container is left as it came (Python never saw the rest) */
    Py_ssize_t entries_size = PyByteArray_GET_SIZE(entries), crcs_size = PyByteArray_GET_SIZE(crcs);
    static unsigned char message[MAX_PAYLOAD];
    static unsigned char entry[MAX_PAYLOAD + 128];
    int status = DONE;
    Py_ssize_t i = start;
    for (; i < PyList_GET_SIZE(records); i++) {
        PyObject *record = PyList_GET_ITEM(records, i);
        shape_t s;
        if (!PyDict_CheckExact(record) || !read_shape(record, &s)) {
            if (PyErr_Occurred())
                goto fail;
            status = ODD;
            break;
        }
        out_t m = {message};
        put_dnsqr(&m, &s);
        Py_ssize_t message_len = m.p - message;
        /* the payload: vid 1, msgtype 9, time, data, the file's ids */
        Py_ssize_t n = 11 + varint_size((uint64_t)s.query_sec) + varint_size((uint64_t)message_len) + message_len
            + trailer_len;
        if (count && estimate + n + 32 >= size) {
            status = FULL;
            break;
        }
        out_t e = {entry};
        put_byte(&e, 0x0a); put_varint(&e, (uint64_t)n);
        put_byte(&e, 0x08); put_byte(&e, 0x01); put_byte(&e, 0x10); put_byte(&e, 0x09);
        put_byte(&e, 0x18); put_varint(&e, (uint64_t)s.query_sec);
        put_byte(&e, 0x25); put_le32(&e, s.query_nsec);
        put_byte(&e, 0x2a); put_varint(&e, (uint64_t)message_len); put_bytes(&e, message, message_len);
        put_bytes(&e, trailer, trailer_len);
        if (append(entries, entry, e.p - entry) < 0)
            goto fail;
        /* nmsg stores the CRC byte-swapped (htonl of the little-endian value) */
        uint32_t le = crc32c(message, message_len);
        uint32_t crc = le >> 24 | (le >> 8 & 0xFF00) | (le << 8 & 0xFF0000) | le << 24;
        unsigned char crc_entry[6];
        out_t c = {crc_entry};
        put_byte(&c, 0x10); put_varint(&c, crc);
        if (append(crcs, crc_entry, c.p - crc_entry) < 0)
            goto fail;
        count += 1;
        estimate += n + 2 + (n >= 1 << 7) + (n >= 1 << 14) + (n >= 1 << 21) + 6;
    }
    return Py_BuildValue("nnni", i, count, estimate, status);
fail:
    PyByteArray_Resize(entries, entries_size); /* shrinking: cannot fail */
    PyByteArray_Resize(crcs, crcs_size);
    return NULL;
}

static PyMethodDef methods[] = {
    {"pack", pack, METH_VARARGS, "Append the NMSG payload entries of records[start:] to a container."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sensor.spool._nmsgpack",
    "The common records of the NMSG spool, packed in C (see the source's header).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__nmsgpack(void)
{
    if (field_keys_init() < 0)
        return NULL;
    crc32c_init();
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "DONE", DONE) < 0 || PyModule_AddIntConstant(m, "FULL", FULL) < 0
        || PyModule_AddIntConstant(m, "ODD", ODD) < 0
        || PyModule_AddIntConstant(m, "TYPE_UDP_QUERY_RESPONSE", TYPE_UDP_QUERY_RESPONSE) < 0
        || PyModule_AddIntConstant(m, "TYPE_UDP_UNANSWERED_QUERY", TYPE_UDP_UNANSWERED_QUERY) < 0
        || add_record_layout(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
