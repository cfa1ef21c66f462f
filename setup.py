"""The compiled parts of the sensor (everything else is in pyproject.toml).

Three hot steps in C, each checked in tests against the Python that
states its rules: sensor._udpdns reads a datagram's UDP and DNS headers
and question, sensor._nmsgpack packs the common records of the NMSG spool,
sensor._cborpack encodes the common record of the CBOR spool. Their
sources say why; README ("Benchmark") says what they save.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("sensor._nmsgpack", sources=["sensor/_nmsgpack.c"], depends=["sensor/_record_fields.h"]),
        Extension("sensor._udpdns", sources=["sensor/_udpdns.c"]),
        Extension("sensor._cborpack", sources=["sensor/_cborpack.c"], depends=["sensor/_record_fields.h"]),
    ]
)
