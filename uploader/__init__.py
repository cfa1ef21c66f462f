"""sie-dns-sensor's uploader: ships finished spool files to the collector
(rsync over OpenSSH, or SFTP), and makes the key pair it logs in with."""
