"""sie-dns-sensor: capture, match and spool a resolver's DNS transactions.

Modules meant to be shared with the uploader (and nothing else of this
package is: tests/test_layout.py holds it so): `config` and `options` (the
file /etc/default/sie-dns-sensor and the -c option), `daemon` and `logs`
(detaching, pidfiles, privileges, syslog), `spooldir` (folders, file
names, locks), `state` and `status` (the daemons' state files and what
`sie-dns-sensor status` judges from them).
"""

__version__ = "0.1.0"
