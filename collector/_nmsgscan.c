/*
 * collector._ingest: the ingest's hot path in C. Walks the payloads of an
 * NMSG container body and gives, for each base:dnsqr record, what the
 * chain takes from it (chain.response_of, then decompose.rrsets, the
 * latter in _decompose.c): (server, response time, RRsets) or the name of
 * the counter the record goes to.
 *
 * Why C: building each record's dict (dnsqr.decode), checking it
 * (record.check) and walking the container's protobuf fields in Python was
 * 30% of the collector benchmark's ingest profile; with the decomposition
 * (_decompose.c), reading a record costs 3.5 microseconds here against 48
 * in Python, inflating included (README, "The compiled parts"). The rules
 * stay in Python:
 * nmsg.Reader (the body's fields, the payloads, their CRC32C), dnsqr.decode
 * and record.check (what a well-formed record is), chain.response_of and
 * render.response_message (which records feed the chain, and their DNS
 * message). tests/test_collector_fast.py holds this file to them on crafted,
 * random and benchmark records and containers.
 *
 * Nothing here decides on damage. `scan` gives up on a container whose
 * body is anything but well-formed base:dnsqr payloads with matching CRCs
 * (collector.spoolscan then reads it with nmsg.Reader, which says what is
 * wrong), and a record it does not take (TCP, a response in fragments, a
 * DnsQR message that is not a plain well-formed record) is handed back as
 * its bytes, for the Python path (chain.Chain.feed after record.check).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "../sensor/spool/_crc32c.h"
#include "_decompose.h"
#include "_rows.h"

typedef unsigned char u8;

/* nmsg.py: VENDOR_BASE, MSGTYPE_DNSQR; record.py: RecordType, UdpChecksum, MAX_LIST; checked in tests */
#define VENDOR_BASE 1
#define MSGTYPE_DNSQR 9
#define TYPE_UDP_QUERY_RESPONSE 1
#define TYPE_TCP 4
#define TYPE_MAX_KNOWN 7 /* UDP_RESPONSE_ONLY: the last of nmsg's DnsQRType */
#define TIME_MAX 0xFFFFFFFFull /* chain.TIME_MAX: a response time the stores keep (ClickHouse: UInt32) */
#define CHECKSUM_INCORRECT 2
#define MAX_LIST 1024
#define MAX_PAYLOADS 65536 /* nmsg.MAX_PAYLOADS: a container's; more, and the walk stops there */
#define IPPROTO_UDP 17

enum { GO_ON = 0, GIVE_UP = 1 };           /* scan's status */
enum { V_OK = 0, V_SHORT = 1, V_BAD = 2 };  /* a varint */

static PyObject *reasons[DC_ERROR];  /* decompose's results as counter names (DC_OK unused) */
static PyObject *checksum_incorrect, *no_message, *no_time, *bad_time, *record_type_other;

/* a varint of up to 64 bits (one beyond: V_BAD, for Python to read) */
static inline int get_varint(const u8 *b, Py_ssize_t end, Py_ssize_t *pos, uint64_t *value)
{
    uint64_t v = 0;
    Py_ssize_t p = *pos;
    for (int i = 0; i < 10; i++) {
        if (p >= end)
            return V_SHORT;
        unsigned c = b[p++];
        if (i == 9 && c > 1)
            return V_BAD;
        v |= (uint64_t)(c & 0x7F) << (7 * i);
        if (c < 0x80) {
            *pos = p;
            *value = v;
            return V_OK;
        }
    }
    return V_BAD;
}

/* one protobuf field inside [.., end): its number, wire type, varint value or
 * bytes span; 0 when it is not well-formed (the caller lets Python say so) */
typedef struct {
    uint64_t number, value;
    unsigned wire;
    Py_ssize_t start, len;
} field_t;

static inline int next_field(const u8 *b, Py_ssize_t end, Py_ssize_t *pos, field_t *f)
{
    uint64_t key, len;
    if (get_varint(b, end, pos, &key) != V_OK)
        return 0;
    f->number = key >> 3;
    f->wire = key & 7;
    switch (f->wire) {
    case 0:
        return get_varint(b, end, pos, &f->value) == V_OK;
    case 2:
        if (get_varint(b, end, pos, &len) != V_OK || len > (uint64_t)(end - *pos))
            return 0;
        f->start = *pos;
        f->len = (Py_ssize_t)len;
        *pos += (Py_ssize_t)len;
        return 1;
    case 5:
    case 1: {
        Py_ssize_t size = f->wire == 5 ? 4 : 8;
        if (end - *pos < size)
            return 0;
        f->start = *pos;
        f->len = size;
        *pos += size;
        return 1;
    }
    }
    return 0;
}

/* ------------------------------------------------------ one DnsQR record */
#define FIELDS 23 /* record.Field numbers are 1..22 */
/* dnsqr._LAYOUT's wire types by field number (-1: not a field it knows) */
static const int dnsqr_wire[FIELDS] = {-1, 0, 2, 2, 0, 0, 0, 0, 2, 0, 0, 0, 2, 0, 5, 2, 0, 5, 2, 2, 1, 0, 0};
enum {
    F_TYPE = 1, F_QUERY_IP = 2, F_RESPONSE_IP = 3, F_QUERY_PACKET = 12, F_QUERY_TIME_SEC = 13,
    F_QUERY_TIME_NSEC = 14, F_RESPONSE_PACKET = 15, F_RESPONSE_TIME_SEC = 16, F_RESPONSE_TIME_NSEC = 17,
    F_UDP_CHECKSUM = 21,
};

typedef struct {
    Py_ssize_t count[FIELDS];
    uint64_t type, checksum, first_time; /* TYPE and UDP_CHECKSUM: the last seen; RESPONSE_TIME_SEC: the first */
    Py_ssize_t server, server_len, packet, packet_len; /* RESPONSE_IP (the last), RESPONSE_PACKET (the first) */
} dnsqr_t;

/* dnsqr.decode, then record.check: 0 when Python would refuse the record or
 * build it differently than read here (a value past 64 bits) */
static int read_dnsqr(const u8 *b, Py_ssize_t pos, Py_ssize_t end, dnsqr_t *r)
{
    memset(r, 0, sizeof *r);
    field_t f = {0};
    while (pos < end) {
        if (!next_field(b, end, &pos, &f))
            return 0;
        if (f.number == 0 || f.number >= FIELDS)
            continue; /* unknown: skipped, as protobuf does */
        if ((int)f.wire != dnsqr_wire[f.number])
            return 0;
        r->count[f.number]++;
        switch (f.number) {
        case F_TYPE: r->type = f.value; break;
        case F_UDP_CHECKSUM: r->checksum = f.value; break;
        case F_RESPONSE_IP: r->server = f.start; r->server_len = f.len; break;
        case F_RESPONSE_PACKET:
            if (r->count[F_RESPONSE_PACKET] == 1) {
                r->packet = f.start;
                r->packet_len = f.len;
            }
            break;
        case F_RESPONSE_TIME_SEC:
            if (r->count[F_RESPONSE_TIME_SEC] == 1)
                r->first_time = f.value;
            break;
        }
    }
    if (!r->count[F_TYPE] || !r->count[F_QUERY_IP] || !r->count[F_RESPONSE_IP])
        return 0;
    for (int side = 0; side < 2; side++) {
        int packets = side ? F_RESPONSE_PACKET : F_QUERY_PACKET;
        Py_ssize_t n = r->count[packets], secs = r->count[packets + 1], nsecs = r->count[packets + 2];
        if (n > MAX_LIST || secs > MAX_LIST || nsecs > MAX_LIST || secs != nsecs || (n && n != secs))
            return 0;
    }
    return 1;
}

/* render._single_payload: the UDP payload of a one-datagram response;
 * 0 when there is none */
static int single_payload(const u8 *p, Py_ssize_t n, Py_ssize_t address_len, Py_ssize_t *start, Py_ssize_t *len)
{
    Py_ssize_t seg;
    if (address_len == 4) {
        if (n < 20 || ((p[6] << 8 | p[7]) & 0x3FFF) || p[9] != IPPROTO_UDP)
            return 0;
        seg = (p[0] & 0x0F) * 4;
    } else if (address_len == 16) {
        if (n < 40 || p[0] >> 4 != 6)
            return 0;
        unsigned next = p[6];
        Py_ssize_t at = 40, payload_len = p[4] << 8 | p[5];
        while (next == 0 || next == 43 || next == 44 || next == 50 || next == 51 || next == 60) {
            if (at + 2 > n || next == 44)
                return 0;
            Py_ssize_t ext_len = 8 * (((Py_ssize_t)p[at + 1] << 8) + 1);
            if (ext_len > payload_len)
                return 0;
            next = p[at];
            at += ext_len;
            payload_len -= ext_len;
        }
        if (at + payload_len > n || payload_len == 0 || next != IPPROTO_UDP)
            return 0;
        seg = at;
    } else {
        return 0;
    }
    /* render._udp_payload on packet[seg:] (Python's slices clamp) */
    if (n - seg < 8)
        return 0;
    Py_ssize_t length = p[seg + 4] << 8 | p[seg + 5];
    Py_ssize_t want = length >= 8 ? length - 8 : length, have = n - seg - 8;
    *start = seg + 8;
    *len = want < have ? want : have;
    return 1;
}

static PyObject *new_ref(PyObject *o)
{
    Py_INCREF(o);
    return o;
}

/* chain.response_of and decompose.rrsets on one DnsQR message: a new
 * reference to (server, time, rrsets) or a counter name, Py_None when
 * Python takes the record, NULL with an exception */
static PyObject *response(const u8 *b, Py_ssize_t start, Py_ssize_t end)
{
    dnsqr_t r;
    if (!read_dnsqr(b, start, end, &r))
        return new_ref(Py_None);
    uint32_t kind = (uint32_t)r.type; /* an enum: 32 bits, as protobuf reads it */
    if (kind != TYPE_UDP_QUERY_RESPONSE) {
        if (kind == TYPE_TCP)
            return new_ref(Py_None);
        if (kind > TYPE_MAX_KNOWN) /* one counter for them all: a counter a type, and the state file, grew */
            return new_ref(record_type_other);
        return PyUnicode_FromFormat("record_type_%lu", (unsigned long)kind);
    }
    if (r.count[F_UDP_CHECKSUM] && (uint32_t)r.checksum == CHECKSUM_INCORRECT)
        return new_ref(checksum_incorrect);
    if (!r.count[F_RESPONSE_PACKET])
        return new_ref(no_message);
    if (r.count[F_RESPONSE_PACKET] > 1)
        return new_ref(Py_None); /* fragments: reassembled in Python */
    Py_ssize_t message, message_len;
    if (!single_payload(b + r.packet, r.packet_len, r.server_len, &message, &message_len))
        return new_ref(no_message);
    if (!r.count[F_RESPONSE_TIME_SEC])
        return new_ref(no_time);
    if (r.first_time > TIME_MAX) /* a negative int64 is a huge uint64 here */
        return new_ref(bad_time);
    PyObject *sets;
    int result = decompose(b + r.packet + message, message_len, &sets);
    if (result == DC_ERROR)
        return NULL;
    if (result != DC_OK)
        return new_ref(reasons[result]);
    PyObject *server = PyBytes_FromStringAndSize((const char *)b + r.server, r.server_len);
    PyObject *when = PyLong_FromLongLong((long long)r.first_time);
    PyObject *item = server && when ? PyTuple_New(3) : NULL;
    if (item == NULL) {
        Py_XDECREF(server);
        Py_XDECREF(when);
        Py_DECREF(sets);
        return NULL;
    }
    PyTuple_SET_ITEM(item, 0, server);
    PyTuple_SET_ITEM(item, 1, when);
    PyTuple_SET_ITEM(item, 2, sets);
    return item;
}

/* ---------------------------------------------------- one NmsgPayload */
/* nmsg._PAYLOAD_WIRES by field number (-1: any) */
static const int payload_wire[10] = {-1, 0, 0, 0, 5, 2, -1, 0, 0, 0};

/* nmsg._payload: the DnsQR bytes of a base:dnsqr payload; 0 for anything
 * else (another type, a payload nmsg._payload refuses) */
static int dnsqr_of(const u8 *b, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t *data, Py_ssize_t *data_len)
{
    uint64_t vid = 0, msgtype = 0;
    int seen = 0; /* bit n: field n was there */
    *data = pos;
    *data_len = 0;
    field_t f = {0};
    while (pos < end) {
        if (!next_field(b, end, &pos, &f))
            return 0;
        if (f.number < 10 && payload_wire[f.number] >= 0 && (int)f.wire != payload_wire[f.number])
            return 0;
        if (f.number < 10)
            seen |= 1 << f.number;
        if (f.number == 1)
            vid = f.value;
        else if (f.number == 2)
            msgtype = f.value;
        else if (f.number == 5) {
            *data = f.start;
            *data_len = f.len;
        }
    }
    return (seen & 0x1E) == 0x1E && vid == VENDOR_BASE && msgtype == MSGTYPE_DNSQR;
}

static int append_new(PyObject *list, PyObject *item)
{
    if (item == NULL)
        return -1;
    int r = PyList_Append(list, item);
    Py_DECREF(item);
    return r;
}

/* scan(buf, pos, limit, base, items, odd, computed, crcs) -> (pos, status)
 *
 * Walks the fields of a container body in buf[pos:], as nmsg._Body.fields
 * and nmsg.Reader._payloads do, up to the first field that is not whole in
 * buf (the caller inflates more, then calls again from the returned pos).
 * `limit` is how far the body goes past buf[0] (a field declaring more is
 * damage), `base` the body's offset of buf[0]. For each payload entry it
 * appends to `items` the record's response (a 3-tuple), its counter name,
 * or (offset in the body, DnsQR bytes) for Python to read (its index in
 * `items` appended to `odd`); to `computed`
 * the payload's CRC as nmsg.payload_crc gives it; each CRC field's value
 * to `crcs`. Status GIVE_UP: the container is for nmsg.Reader to read. */
static PyObject *scan(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos, limit, base;
    PyObject *items, *odd, *computed, *crcs;
    if (!PyArg_ParseTuple(args, "y*nnnO!O!O!O!", &view, &pos, &limit, &base, &PyList_Type, &items, &PyList_Type,
                          &odd, &PyList_Type, &computed, &PyList_Type, &crcs))
        return NULL;
    const u8 *b = view.buf;
    Py_ssize_t n = view.len;
    int status = GO_ON;
    int sequences = 0; /* fields 3 and 4 (sequence, sequence_id): one of each a container */
    if (pos < 0 || pos > n || limit < n)
        status = GIVE_UP;
    while (status == GO_ON && pos < n) {
        Py_ssize_t start = pos;
        uint64_t key, value;
        int v = get_varint(b, n, &pos, &key);
        if (v == V_OK) {
            switch (key & 7) {
            case 0: v = get_varint(b, n, &pos, &value); break;
            case 2:
                v = get_varint(b, n, &pos, &value);
                if (v == V_OK && value > (uint64_t)(limit - pos))
                    v = V_BAD;
                else if (v == V_OK && value > (uint64_t)(n - pos))
                    v = V_SHORT;
                break;
            default: v = V_BAD; /* 1 and 5 are never the body's; others are damage */
            }
        }
        if (v == V_SHORT) {
            pos = start;
            break;
        }
        uint64_t number = key >> 3;
        unsigned wire = key & 7;
        /* Field 0 is no field (protobuf); others than NmsgContainer's four, or its sequence fields
         * again and again, are filler: nmsg.Reader says so (MAX_OTHER_FIELDS) after a few, where
         * this walk gave them up only at their end and Python then crawled through all of them. */
        if (v == V_BAD || number == 0 || number > 4 || ((number == 3 || number == 4) && ++sequences > 2)
            || (number == 1 && wire != 2) || (number == 2 && wire != 0)) {
            status = GIVE_UP;
            break;
        }
        if (number == 2) {
            if (append_new(crcs, PyLong_FromUnsignedLongLong(value)) < 0)
                goto fail;
        } else if (number == 1) {
            Py_ssize_t data, data_len;
            if (PyList_GET_SIZE(items) >= MAX_PAYLOADS) { /* else 16 MiB of tiny payloads held 240 MB */
                status = GIVE_UP;
                break;
            }
            if (!dnsqr_of(b, pos, pos + (Py_ssize_t)value, &data, &data_len)) {
                status = GIVE_UP;
                break;
            }
            uint32_t le = crc32c(b + data, data_len);
            uint32_t crc = le >> 24 | (le >> 8 & 0xFF00) | (le << 8 & 0xFF0000) | le << 24;
            if (append_new(computed, PyLong_FromUnsignedLong(crc)) < 0)
                goto fail;
            PyObject *item = response(b, data, data + data_len);
            if (item == Py_None) {
                Py_DECREF(item);
                item = Py_BuildValue("(ny#)", base + start, (const char *)b + data, data_len);
                if (append_new(odd, PyLong_FromSsize_t(PyList_GET_SIZE(items))) < 0) {
                    Py_XDECREF(item);
                    goto fail;
                }
            }
            if (append_new(items, item) < 0)
                goto fail;
        }
        if (wire == 2)
            pos += (Py_ssize_t)value;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(ni)", pos, status);
fail:
    PyBuffer_Release(&view);
    return NULL;
}

/* response(dnsqr_bytes): what scan makes of one record, None for Python's (tests) */
static PyObject *response_py(PyObject *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *item = response(view.buf, 0, view.len);
    PyBuffer_Release(&view);
    return item;
}

/* rrsets(wire): decompose's RRsets as ((owner, type, rdatas), ...), or the counter name (tests) */
static PyObject *rrsets_py(PyObject *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *sets;
    int result = decompose(view.buf, view.len, &sets);
    PyBuffer_Release(&view);
    if (result == DC_ERROR)
        return NULL;
    return result == DC_OK ? sets : new_ref(reasons[result]);
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, "Walk a container body's payloads: what the chain takes from each record."},
    {"response", response_py, METH_O, "What scan makes of one DnsQR message (None: Python's to read)."},
    {"rrsets", rrsets_py, METH_O, "decompose.rrsets as a tuple of (owner, type, rdatas), or the counter name."},
    {"name_key", name_key, METH_O, "names.key (ValueError: not a name this takes)."},
    {"pack_rdata", pack_rdata, METH_O, "store.pack_rdata (ValueError: not data this takes)."},
    {"rdata_target", rdata_target, METH_VARARGS, "decompose.rdata_names (ValueError: where it raises Undecodable)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "collector._ingest",
    "The ingest's hot path in C (see collector/_nmsgscan.c, _decompose.c and _rows.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

static PyObject *interned(const char *text)
{
    return PyUnicode_InternFromString(text);
}

PyMODINIT_FUNC PyInit__ingest(void)
{
    crc32c_init();
    if (decompose_init() < 0)
        return NULL;
    reasons[DC_UNDECODABLE] = interned("undecodable");
    reasons[DC_NOT_RESPONSE] = interned("not_a_response");
    reasons[DC_TRUNCATED] = interned("truncated");
    reasons[DC_NOT_QUERY] = interned("not_a_query_response");
    checksum_incorrect = interned("checksum_incorrect");
    no_message = interned("no_message");
    no_time = interned("no_time");
    bad_time = interned("bad_time");
    record_type_other = interned("record_type_other");
    if (!reasons[DC_UNDECODABLE] || !reasons[DC_NOT_RESPONSE] || !reasons[DC_TRUNCATED] || !reasons[DC_NOT_QUERY]
        || !checksum_incorrect || !no_message || !no_time || !bad_time || !record_type_other)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    PyObject *wires = PyTuple_New(FIELDS);
    for (int i = 0; wires != NULL && i < FIELDS; i++)
        PyTuple_SET_ITEM(wires, i, PyLong_FromLong(dnsqr_wire[i]));
    PyObject *fields = Py_BuildValue("{sisisisisisisisisisi}", "TYPE", F_TYPE, "QUERY_IP", F_QUERY_IP, "RESPONSE_IP",
                                     F_RESPONSE_IP, "QUERY_PACKET", F_QUERY_PACKET, "QUERY_TIME_SEC", F_QUERY_TIME_SEC,
                                     "QUERY_TIME_NSEC", F_QUERY_TIME_NSEC, "RESPONSE_PACKET", F_RESPONSE_PACKET,
                                     "RESPONSE_TIME_SEC", F_RESPONSE_TIME_SEC, "RESPONSE_TIME_NSEC",
                                     F_RESPONSE_TIME_NSEC, "UDP_CHECKSUM", F_UDP_CHECKSUM);
    if (wires == NULL || fields == NULL || PyModule_AddObjectRef(m, "DNSQR_WIRES", wires) < 0
        || PyModule_AddObjectRef(m, "FIELDS", fields) < 0) {
        Py_XDECREF(wires);
        Py_XDECREF(fields);
        Py_DECREF(m);
        return NULL;
    }
    Py_DECREF(wires);
    Py_DECREF(fields);
    PyObject *tables = decompose_tables();
    if (tables == NULL || PyModule_AddObjectRef(m, "DESCRIPTORS", PyTuple_GET_ITEM(tables, 0)) < 0
        || PyModule_AddObjectRef(m, "NAME_FIELDS", PyTuple_GET_ITEM(tables, 1)) < 0
        || PyModule_AddIntConstant(m, "VENDOR_BASE", VENDOR_BASE) < 0
        || PyModule_AddIntConstant(m, "MSGTYPE_DNSQR", MSGTYPE_DNSQR) < 0
        || PyModule_AddIntConstant(m, "TYPE_UDP_QUERY_RESPONSE", TYPE_UDP_QUERY_RESPONSE) < 0
        || PyModule_AddIntConstant(m, "TYPE_MAX_KNOWN", TYPE_MAX_KNOWN) < 0
        || PyModule_AddObject(m, "TIME_MAX", PyLong_FromUnsignedLongLong(TIME_MAX)) < 0
        || PyModule_AddIntConstant(m, "TYPE_TCP", TYPE_TCP) < 0
        || PyModule_AddIntConstant(m, "CHECKSUM_INCORRECT", CHECKSUM_INCORRECT) < 0
        || PyModule_AddIntConstant(m, "MAX_LIST", MAX_LIST) < 0
        || PyModule_AddIntConstant(m, "MAX_PAYLOADS", MAX_PAYLOADS) < 0
        || PyModule_AddIntConstant(m, "GIVE_UP", GIVE_UP) < 0) {
        Py_XDECREF(tables);
        Py_DECREF(m);
        return NULL;
    }
    Py_DECREF(tables);
    return m;
}
