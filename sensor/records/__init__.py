"""What a record is, and the DNS facts every room shares: its types and fields
(record), wire numbers (wire), questions and names (dns), type and rcode
names (rrnames), default bounds (limits). Imports nothing of the sensor.
"""
