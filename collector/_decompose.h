/* A DNS response -> its canonical RRsets (collector/_decompose.c). */
#ifndef COLLECTOR_DECOMPOSE_H
#define COLLECTOR_DECOMPOSE_H

#include <Python.h>

enum { DC_OK, DC_UNDECODABLE, DC_NOT_RESPONSE, DC_TRUNCATED, DC_NOT_QUERY, DC_ERROR };

int decompose(const unsigned char *wire, Py_ssize_t len, PyObject **out);
int decompose_init(void);
PyObject *decompose_tables(void);
const char *decompose_layout(unsigned type);

#endif
