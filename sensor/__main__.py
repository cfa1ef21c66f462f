"""`python -m sensor` is `sie-dns-sensor`."""

from .cli import main

main()
