"""The one compiled part of the sensor (everything else is in pyproject.toml).

sensor._nmsgpack packs the common records of the NMSG spool in C; see
its source for why, and README ("Benchmark") for what it saves.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("sensor._nmsgpack", sources=["sensor/_nmsgpack.c"])])
