"""Records and DNS messages for people: read's JSON (render), presentation text
(dnstext), DNS messages read as wdns reads them (dnsmessage), run --print
(liveprint). Shared with the collector.
"""
