"""sie-dns-sensor: capture, match and spool a resolver's DNS transactions.

The command line (`cli`), the start that opens edge, matcher and writer
(`startup`) and the pipeline that runs edge -> matcher -> writer
(`pipeline`) sit here; everything else is in a room named for its
concept: `records`, `matching`, `edges`, `spool`, `display`, `service`.
The uploader and the collector import only the shared rooms (records,
spool, display, service); tests/test_layout.py holds the rules.
"""

__version__ = "0.1.0"
