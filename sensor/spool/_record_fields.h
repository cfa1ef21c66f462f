/*
 * A spool record (a dict keyed by record.Field numbers) read from C: the
 * helpers both C encoders use (_nmsgpack.c, _cborpack.c). Each returns 0
 * or NULL, without an exception, when a value is not what a fast path
 * takes; the record then goes to the Python encoder, which takes anything.
 */
#ifndef SENSOR_RECORD_FIELDS_H
#define SENSOR_RECORD_FIELDS_H

#include <Python.h>
#include <stdint.h>

/* record.Field's numbers. Each module that includes this exposes them
 * (add_record_layout), and the Python that imports it refuses a module
 * built for other numbers (record.check_compiled). */
enum {
    F_TYPE = 1, F_QUERY_IP, F_RESPONSE_IP, F_PROTO, F_QUERY_PORT, F_RESPONSE_PORT, F_ID, F_QNAME, F_QTYPE, F_QCLASS,
    F_RCODE, F_QUERY_PACKET, F_QUERY_TIME_SEC, F_QUERY_TIME_NSEC, F_RESPONSE_PACKET, F_RESPONSE_TIME_SEC,
    F_RESPONSE_TIME_NSEC, F_TCP, F_ICMP, F_TIMEOUT, F_UDP_CHECKSUM, F_RESOLVER_ADDRESS_ZEROED,
    FIELD_COUNT /* one more than the largest number: the size of field_keys */
};

static const struct {
    const char *name;
    int number;
} field_names[] = {
    {"TYPE", F_TYPE}, {"QUERY_IP", F_QUERY_IP}, {"RESPONSE_IP", F_RESPONSE_IP}, {"PROTO", F_PROTO},
    {"QUERY_PORT", F_QUERY_PORT}, {"RESPONSE_PORT", F_RESPONSE_PORT}, {"ID", F_ID}, {"QNAME", F_QNAME},
    {"QTYPE", F_QTYPE}, {"QCLASS", F_QCLASS}, {"RCODE", F_RCODE}, {"QUERY_PACKET", F_QUERY_PACKET},
    {"QUERY_TIME_SEC", F_QUERY_TIME_SEC}, {"QUERY_TIME_NSEC", F_QUERY_TIME_NSEC},
    {"RESPONSE_PACKET", F_RESPONSE_PACKET}, {"RESPONSE_TIME_SEC", F_RESPONSE_TIME_SEC},
    {"RESPONSE_TIME_NSEC", F_RESPONSE_TIME_NSEC}, {"TCP", F_TCP}, {"ICMP", F_ICMP}, {"TIMEOUT", F_TIMEOUT},
    {"UDP_CHECKSUM", F_UDP_CHECKSUM}, {"RESOLVER_ADDRESS_ZEROED", F_RESOLVER_ADDRESS_ZEROED},
};

/* The shapes the encoders take, in field order: record.PAIR_FIELDS (the
 * UDP pair) and record.UNANSWERED_FIELDS (an unanswered query); a record
 * of that type and size has exactly these fields. */
static const int pair_fields[] = {
    F_TYPE, F_QUERY_IP, F_RESPONSE_IP, F_PROTO, F_QUERY_PORT, F_RESPONSE_PORT, F_ID, F_QNAME, F_QTYPE, F_QCLASS,
    F_RCODE, F_QUERY_PACKET, F_QUERY_TIME_SEC, F_QUERY_TIME_NSEC, F_RESPONSE_PACKET, F_RESPONSE_TIME_SEC,
    F_RESPONSE_TIME_NSEC, F_UDP_CHECKSUM,
};
static const int unanswered_fields[] = {
    F_TYPE, F_QUERY_IP, F_RESPONSE_IP, F_PROTO, F_QUERY_PORT, F_RESPONSE_PORT, F_ID, F_QNAME, F_QTYPE, F_QCLASS,
    F_QUERY_PACKET, F_QUERY_TIME_SEC, F_QUERY_TIME_NSEC, F_TIMEOUT,
};
#define COUNT_OF(array) ((Py_ssize_t)(sizeof(array) / sizeof((array)[0])))
#define PAIR_SIZE COUNT_OF(pair_fields)
#define UNANSWERED_SIZE COUNT_OF(unanswered_fields)

static PyObject *field_keys[FIELD_COUNT];

/* the Field numbers as int objects, made once at module import */
static int field_keys_init(void)
{
    for (int i = 0; i < FIELD_COUNT; i++) {
        field_keys[i] = PyLong_FromLong(i);
        if (field_keys[i] == NULL)
            return -1;
    }
    return 0;
}

static PyObject *int_tuple(const int *numbers, Py_ssize_t n)
{
    PyObject *t = PyTuple_New(n);
    for (Py_ssize_t i = 0; t != NULL && i < n; i++) {
        PyObject *number = PyLong_FromLong(numbers[i]);
        if (number == NULL)
            Py_CLEAR(t);
        else
            PyTuple_SET_ITEM(t, i, number);
    }
    return t;
}

/* PyModule_AddObjectRef taking the reference (PyModule_Add, before 3.13) */
static int add_owned(PyObject *m, const char *name, PyObject *value)
{
    if (value == NULL)
        return -1;
    int result = PyModule_AddObjectRef(m, name, value);
    Py_DECREF(value);
    return result;
}

/* FIELDS ({name: number}), FIELD_COUNT, PAIR_FIELDS and UNANSWERED_FIELDS
 * on the module: what it assumes of a record, for record.check_compiled */
static int add_record_layout(PyObject *m)
{
    PyObject *names = PyDict_New();
    for (Py_ssize_t i = 0; names != NULL && i < COUNT_OF(field_names); i++) {
        PyObject *number = PyLong_FromLong(field_names[i].number);
        if (number == NULL || PyDict_SetItemString(names, field_names[i].name, number) < 0)
            Py_CLEAR(names);
        Py_XDECREF(number);
    }
    if (add_owned(m, "FIELDS", names) < 0 || PyModule_AddIntConstant(m, "FIELD_COUNT", FIELD_COUNT) < 0
        || add_owned(m, "PAIR_FIELDS", int_tuple(pair_fields, PAIR_SIZE)) < 0
        || add_owned(m, "UNANSWERED_FIELDS", int_tuple(unanswered_fields, UNANSWERED_SIZE)) < 0)
        return -1;
    return 0;
}

static inline PyObject *field(PyObject *record, int number)
{
    return PyDict_GetItemWithError(record, field_keys[number]);
}

/* the only item of a one-item list (a side's datagrams and times) */
static inline PyObject *only(PyObject *record, int number)
{
    PyObject *obj = field(record, number);
    if (obj == NULL || !PyList_CheckExact(obj) || PyList_GET_SIZE(obj) != 1)
        return NULL;
    return PyList_GET_ITEM(obj, 0);
}

/* an int (not a bool) from 0 up to, not including, `limit` */
static inline int uint_below(PyObject *obj, uint64_t limit, uint64_t *value)
{
    if (obj == NULL || !PyLong_Check(obj) || PyBool_Check(obj))
        return 0;
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (overflow || v < 0 || (uint64_t)v >= limit)
        return 0;
    *value = (uint64_t)v;
    return 1;
}

#endif
