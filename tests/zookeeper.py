"""A real ZooKeeper (Debian's `zookeeper` package, 3.8) on loopback, for the ClickHouse replication tests.

One standalone server (`ZooKeeperServerMain`, not the Debian service) with
its own zoo.cfg, data folder and client port, a small heap, its log in its
folder; `close()` stops it. `xml()` is the `<zookeeper>` section a
clickhouse-server configuration needs to use it.
"""

from __future__ import annotations

import os
import socket

from tests.serverprocess import ServerProcess
from tests.sshd import free_port

JAVA = "/usr/bin/java"
JARS = ("/usr/share/java/zookeeper.jar", "/usr/share/java/log4j-1.2.jar", "/usr/share/java/slf4j-log4j12.jar")
MAIN = "org.apache.zookeeper.server.ZooKeeperServerMain"

_CONFIG = """tickTime=500
initLimit=10
syncLimit=5
dataDir={folder}/data
clientPort={port}
clientPortAddress=127.0.0.1
maxClientCnxns=100
admin.enableServer=false
4lw.commands.whitelist=ruok
"""
_LOG4J = """log4j.rootLogger=WARN, FILE
log4j.appender.FILE=org.apache.log4j.FileAppender
log4j.appender.FILE.File={folder}/zookeeper.log
log4j.appender.FILE.layout=org.apache.log4j.PatternLayout
log4j.appender.FILE.layout.ConversionPattern=%d %p %c: %m%n
"""


def available() -> str | None:
    """None when a ZooKeeper can be started here, else why not."""
    if not all(os.path.exists(path) for path in (JAVA, *JARS)):
        return "needs Debian's zookeeper (and its java runtime): tests/setup.sh installs it"
    return None


class ZooKeeper(ServerProcess):
    """One standalone ZooKeeper on 127.0.0.1, started at once."""

    NAME = "ZooKeeper"
    LOGS = ("zookeeper.log", "stdout.log")

    def __init__(self, folder: str, timeout: float = 60.0) -> None:
        super().__init__(folder, free_port())
        os.makedirs(os.path.join(folder, "data"), exist_ok=True)
        with open(os.path.join(folder, "zoo.cfg"), "w") as handle:
            handle.write(_CONFIG.format(folder=folder, port=self.port))
        with open(os.path.join(folder, "log4j.properties"), "w") as handle:
            handle.write(_LOG4J.format(folder=folder))
        # a small heap: the machine is shared, and a test's znodes are a few thousand
        self.launch([JAVA, "-Xmx256m", "-XX:+UseSerialGC", "-cp", ":".join((folder, *JARS)), MAIN,
                     os.path.join(folder, "zoo.cfg")], timeout, 0.3)

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
                probe.sendall(b"ruok")
                return probe.recv(4) == b"imok"
        except OSError:
            return False

    def xml(self) -> str:
        return (f"<zookeeper><node><host>127.0.0.1</host><port>{self.port}</port></node>"
                "<session_timeout_ms>10000</session_timeout_ms></zookeeper>")
