/*
 * sensor.matching._udpdns: a UDP segment's header and its DNS message's header and
 * question, read in C for the matcher's hot path (matcher.Matcher._udp).
 *
 * Why C: these reads (three struct unpacks, the checks between them and
 * the walk over the question's labels) run for every packet, and in
 * Python they were the largest part of the matcher's time. The rules are
 * udpdns.read_in_python's (the matcher's fallback where this module is
 * not built); tests/test_udpdns.py holds this module to them on crafted
 * and random datagrams, tests/test_sanitizers.py runs those tests on a
 * build under AddressSanitizer and UndefinedBehaviorSanitizer.
 *
 * read(buf, start) -> (sport, dport, end, ident, flags, question) or the
 * name of the counter a datagram that is not a well-formed DNS message
 * goes to ("not_dns", "malformed_udp", "malformed_dns"). `start` is where
 * the UDP header begins in `buf`; `end` where the segment ends; question
 * is (qname as on the wire, qtype, qclass) when the message has exactly
 * one question and bytes after its header, else None.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* wire.py: DNS_PORTS (either side makes a UDP datagram DNS), DNS_HEADER_LEN;
 * udpdns.py refuses this module at import when they differ */
#define DNS_PORT 53
#define MDNS_PORT 5353
#define DNS_HEADER_LEN 12
#define UDP_HEADER_LEN 8

static PyObject *not_dns, *malformed_udp, *malformed_dns;

static inline unsigned be16(const unsigned char *p) { return (unsigned)p[0] << 8 | p[1]; }

/* a tuple of new references (Py_BuildValue parses its format each call) */
static PyObject *tuple_of(PyObject **items, Py_ssize_t n)
{
    PyObject *t = NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        if (items[i] == NULL)
            goto fail;
    t = PyTuple_New(n);
    if (t == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++)
        PyTuple_SET_ITEM(t, i, items[i]);
    return t;
fail:
    for (Py_ssize_t i = 0; i < n; i++)
        Py_XDECREF(items[i]);
    return NULL;
}

static PyObject *tuple3(PyObject *a, PyObject *b, PyObject *c)
{
    PyObject *items[3] = {a, b, c};
    return tuple_of(items, 3);
}

static inline int is_dns_port(unsigned port) { return port == DNS_PORT || port == MDNS_PORT; }

/* the question as dns.parse_question reads it (wdns's skip_name): labels
 * skipped by their length octet, a pointer ends the name with its two
 * octets; NULL with no exception when the name and type/class do not fit */
static PyObject *question(const unsigned char *buf, Py_ssize_t msg, Py_ssize_t end)
{
    Py_ssize_t first = msg + DNS_HEADER_LEN, pos = first;
    while (pos < end) {
        unsigned length = buf[pos];
        if (length == 0)
            break;
        if (length >= 0xC0) {
            pos += 1;
            break;
        }
        pos += length + 1;
    }
    pos += 1;
    if (pos + 4 > end)
        return NULL;
    return tuple3(PyBytes_FromStringAndSize((const char *)buf + first, pos - first), PyLong_FromLong(be16(buf + pos)),
                  PyLong_FromLong(be16(buf + pos + 2)));
}

static PyObject *parse(const unsigned char *buf, Py_ssize_t size, Py_ssize_t start)
{
    if (start < 0 || size - start < 6) { /* not start + 6: it could overflow */
        /* callers check this before; as the struct unpack of ports and length would */
        PyErr_SetString(PyExc_ValueError, "UDP header past the end of the datagram");
        return NULL;
    }
    unsigned sport = be16(buf + start), dport = be16(buf + start + 2), length = be16(buf + start + 4);
    if (!is_dns_port(sport) && !is_dns_port(dport))
        return Py_NewRef(not_dns);
    Py_ssize_t end = start + length;
    if (length < UDP_HEADER_LEN || end > size)
        return Py_NewRef(malformed_udp);
    Py_ssize_t msg = start + UDP_HEADER_LEN;
    if (end - msg < DNS_HEADER_LEN)
        return Py_NewRef(malformed_dns);
    unsigned ident = be16(buf + msg), flags = be16(buf + msg + 2), qdcount = be16(buf + msg + 4);
    PyObject *q;
    /* as the reference: only exactly one question, with bytes after the header */
    if (qdcount == 1 && end > msg + DNS_HEADER_LEN) {
        q = question(buf, msg, end);
        if (q == NULL)
            return PyErr_Occurred() ? NULL : Py_NewRef(malformed_dns);
    } else {
        q = Py_NewRef(Py_None);
    }
    PyObject *items[6] = {PyLong_FromLong(sport), PyLong_FromLong(dport), PyLong_FromSsize_t(end),
                          PyLong_FromLong(ident), PyLong_FromLong(flags), q};
    return tuple_of(items, 6);
}

static PyObject *read_udp_dns(PyObject *Py_UNUSED(self), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "read(buf, start) takes two arguments");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    if (PyBytes_CheckExact(args[0]))  /* every datagram the edges make */
        return parse((const unsigned char *)PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]), start);
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = parse(view.buf, view.len, start);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"read", (PyCFunction)(void (*)(void))read_udp_dns, METH_FASTCALL,
     "read(buf, start) -> (sport, dport, end, ident, flags, question) or a counter's name."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "sensor.matching._udpdns",
    "A UDP segment's header and its DNS message's header and question, read in C (see the source's header).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__udpdns(void)
{
    not_dns = PyUnicode_InternFromString("not_dns");
    malformed_udp = PyUnicode_InternFromString("malformed_udp");
    malformed_dns = PyUnicode_InternFromString("malformed_dns");
    if (not_dns == NULL || malformed_udp == NULL || malformed_dns == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "DNS_PORT", DNS_PORT) < 0 || PyModule_AddIntConstant(m, "MDNS_PORT", MDNS_PORT) < 0
        || PyModule_AddIntConstant(m, "DNS_HEADER_LEN", DNS_HEADER_LEN) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
