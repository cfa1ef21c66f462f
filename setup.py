"""The compiled parts of the sensor and the collector (everything else is in pyproject.toml).

Hot steps in C, each checked in tests against the Python that states its
rules: sensor.matching._udpdns reads a datagram's UDP and DNS headers and question,
sensor.spool._nmsgpack packs the common records of the NMSG spool,
sensor.spool._cborpack encodes the common record of the CBOR spool, and
collector._ingest reads NMSG records for the ingest (their responses'
RRsets) and makes the store's keys. Their sources say why; README ("The
compiled parts") says what they save.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("sensor.spool._nmsgpack", sources=["sensor/spool/_nmsgpack.c"],
                  depends=["sensor/spool/_record_fields.h", "sensor/spool/_crc32c.h"]),
        Extension("sensor.matching._udpdns", sources=["sensor/matching/_udpdns.c"]),
        Extension("sensor.spool._cborpack", sources=["sensor/spool/_cborpack.c"],
                  depends=["sensor/spool/_record_fields.h"]),
        Extension("collector._ingest", sources=["collector/_nmsgscan.c", "collector/_decompose.c", "collector/_rows.c"],
                  depends=["collector/_decompose.h", "collector/_rows.h", "sensor/spool/_crc32c.h"]),
    ]
)
