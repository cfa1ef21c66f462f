"""The sans-I/O matcher: fed datagrams and a clock, it returns records. The
filter and its user-space twin (bpf), IP reassembly (fragments), checksums,
and the C reader of UDP/DNS headers (udpdns, _udpdns.c). Imports only
records.
"""
