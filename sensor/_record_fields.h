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

#define FIELD_COUNT 23 /* record.Field numbers are 1..22 */

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
