/*
 * The store's row values in C, for SqliteStore.merge: a name's key
 * (names.key), an RRset's packed data (store.pack_rdata) and the name a
 * record's data points to (decompose.rdata_names, the inverse index's key).
 *
 * Why C: a merge computes them for every row it writes, about four
 * million a million responses on the collector benchmark, at 1 to 1.5
 * microseconds each in Python: the merge's own Python went from 11-13 to
 * 8 CPU-s a million responses (README, "The compiled parts"). The rules
 * stay stated in names.py and store.py; tests/test_collector_fast.py holds
 * these to them on crafted and random names and data. A name these do not
 * take (not a wire name of labels of 1 to 63 octets ending the bytes with the
 * root's zero octet) raises ValueError, and the caller
 * uses the Python (which says what is wrong, or takes it).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "_decompose.h"
#include "_rows.h"

#define MAX_NAME_LEN 255

static inline unsigned char lower(unsigned char c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* name_key(wire) -> names.key(wire): the labels reversed, lower case, no root */
PyObject *name_key(PyObject *self, PyObject *arg)
{
    if (!PyBytes_CheckExact(arg)) {
        PyErr_SetString(PyExc_TypeError, "name_key takes bytes");
        return NULL;
    }
    const unsigned char *w = (const unsigned char *)PyBytes_AS_STRING(arg);
    Py_ssize_t n = PyBytes_GET_SIZE(arg), starts[MAX_NAME_LEN / 2 + 1], count = 0, pos = 0;
    while (pos < n && w[pos] && w[pos] <= 63 && count < MAX_NAME_LEN / 2 + 1) {
        starts[count++] = pos;
        pos += w[pos] + 1;
    }
    if (pos != n - 1 || w[pos]) { /* the root's zero octet ends the bytes */
        PyErr_SetString(PyExc_ValueError, "not a name name_key takes");
        return NULL;
    }
    PyObject *key = PyBytes_FromStringAndSize(NULL, pos);
    if (key == NULL)
        return NULL;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(key);
    for (Py_ssize_t i = count - 1; i >= 0; i--) {
        Py_ssize_t len = w[starts[i]] + 1;
        for (Py_ssize_t j = 0; j < len; j++)
            *out++ = lower(w[starts[i] + j]);
    }
    return key;
}

/* pack_rdata(rdatas) -> store.pack_rdata(rdatas): each datum after its two-octet length */
PyObject *pack_rdata(PyObject *self, PyObject *arg)
{
    if (!PyTuple_CheckExact(arg)) {
        PyErr_SetString(PyExc_TypeError, "pack_rdata takes a tuple of bytes");
        return NULL;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(arg), size = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *datum = PyTuple_GET_ITEM(arg, i);
        if (!PyBytes_CheckExact(datum) || PyBytes_GET_SIZE(datum) > 0xFFFF) {
            PyErr_SetString(PyExc_ValueError, "not a datum pack_rdata takes");
            return NULL;
        }
        size += 2 + PyBytes_GET_SIZE(datum);
    }
    PyObject *packed = PyBytes_FromStringAndSize(NULL, size);
    if (packed == NULL)
        return NULL;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(packed);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *datum = PyTuple_GET_ITEM(arg, i);
        Py_ssize_t len = PyBytes_GET_SIZE(datum);
        *out++ = (unsigned char)(len >> 8);
        *out++ = (unsigned char)len;
        memcpy(out, PyBytes_AS_STRING(datum), (size_t)len);
        out += len;
    }
    return packed;
}

/* rdata_target(type, datum) -> decompose.rdata_names(type, datum): the host or zone
 * name the data points to, else None; ValueError where name_end raises Undecodable */
PyObject *rdata_target(PyObject *self, PyObject *args)
{
    unsigned int type;
    PyObject *datum;
    if (!PyArg_ParseTuple(args, "IS", &type, &datum))
        return NULL;
    const char *layout = decompose_layout(type);
    if (layout == NULL || type == 14 || type == 17 || type == 26 || type == 35) /* mailboxes and rules */
        Py_RETURN_NONE;
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(datum);
    Py_ssize_t n = PyBytes_GET_SIZE(datum), skip = layout[0] >= '0' && layout[0] <= '9' ? layout[0] - '0' : 0;
    Py_ssize_t pos = skip;
    while (pos < n && d[pos])
        pos += d[pos] + 1;
    if (pos >= n) {
        PyErr_SetString(PyExc_ValueError, "name runs past the record data");
        return NULL;
    }
    if (skip == 0 && pos + 1 == n) { /* the whole datum, as Python's slice gives it */
        Py_INCREF(datum);
        return datum;
    }
    return PyBytes_FromStringAndSize((const char *)d + skip, pos + 1 - skip);
}
