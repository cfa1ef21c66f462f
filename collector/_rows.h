/* The store's row values in C (collector/_rows.c). */
#ifndef COLLECTOR_ROWS_H
#define COLLECTOR_ROWS_H

#include <Python.h>

PyObject *name_key(PyObject *self, PyObject *arg);
PyObject *pack_rdata(PyObject *self, PyObject *arg);
PyObject *rdata_target(PyObject *self, PyObject *args);

#endif
