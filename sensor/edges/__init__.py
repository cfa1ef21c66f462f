"""Where datagrams come from: libpcap (live or a file) with its link layers,
fanout and workers; dnstap over Frame Streams, its socket (systemd
activation) and the table carried across restarts. Edges feed the matcher;
nothing but the sensor's command line imports them.
"""
