"""sie-dns-collector: the other end of the sensors' uploads.

Files arrive through OpenSSH (rrsync or internal-sftp) into one folder a
sensor; `ingest` decodes them with the sensor's own spool readers, splits
the responses into RRsets, keeps those within the responding server's
bailiwick, coalesces repeats and merges them into the store; `query`
(and later the HTTP APIs) answer from the store.
"""
