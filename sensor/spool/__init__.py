"""Spool files and their folder: NMSG (nmsg, dnsqr, _nmsgpack.c) and CBOR
(cbor, _cborpack.c) behind one writer and reader (formats), rotation
(writer), and the folder layout (spooldir). Shared with the uploader and the
collector; imports only records.
"""
