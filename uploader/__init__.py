"""sie-dns-sensor's uploader: ships finished spool files to the collector.

Built in its own issue; the package exists now so the distribution's
layout is final.
"""
