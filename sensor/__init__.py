"""sie-dns-sensor: capture, match and spool a resolver's DNS transactions."""

__version__ = "0.1.0"
