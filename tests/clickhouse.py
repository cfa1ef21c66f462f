"""Real ClickHouse servers (Debian's clickhouse-server) on loopback, for tests and benchmarks.

`Cluster(folder, shards=2)` starts one server process per shard, each with
its own native port, data folder, log and configuration; every
configuration's `remote_servers` names them all as the cluster `pdns_test`,
so a Distributed table on any of them reads every shard. `stop()` stops
one (a shard down), `start()` brings it back on the same port and data;
`close()` stops them all. Nothing listens but the native port on 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import shutil
import socket

from tests.serverprocess import ServerProcess
from tests.sshd import free_port

SERVER = "/usr/sbin/clickhouse-server"
CLUSTER = "pdns_test"

_CONFIG = """<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{folder}/server.log</log><errorlog>{folder}/server.err.log</errorlog>
    <size>10M</size><count>1</count></logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>{port}</tcp_port>
  <path>{folder}/data/</path>
  <tmp_path>{folder}/tmp/</tmp_path>
  <user_files_path>{folder}/user_files/</user_files_path>
  <format_schema_path>{folder}/format_schemas/</format_schema_path>
  <users_config>{folder}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <max_concurrent_queries>200</max_concurrent_queries>
  <remote_servers><{cluster}>{shards}</{cluster}></remote_servers>
</yandex>
"""
_SHARD = "<shard><replica><host>127.0.0.1</host><port>{port}</port></replica></shard>"
_USERS = """<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
"""


def available() -> str | None:
    """None when servers can be started here, else why not."""
    if not os.path.exists(SERVER):
        return "needs Debian's clickhouse-server (tests/setup.sh installs it)"
    return None


class Server(ServerProcess):
    """One clickhouse-server process: a shard of the cluster."""

    NAME = "clickhouse-server"
    LOGS = ("server.err.log",)

    def __init__(self, folder: str, port: int, ports: list[int]) -> None:
        super().__init__(folder, port)
        os.makedirs(folder, exist_ok=True)
        shards = "".join(_SHARD.format(port=each) for each in ports)
        with open(os.path.join(folder, "config.xml"), "w") as handle:
            handle.write(_CONFIG.format(folder=folder, port=port, cluster=CLUSTER, shards=shards))
        with open(os.path.join(folder, "users.xml"), "w") as handle:
            handle.write(_USERS)

    def start(self, timeout: float = 60.0) -> None:
        self.launch([SERVER, f"--config-file={self.folder}/config.xml"], timeout, 0.2)

    def answers(self) -> bool:
        from clickhouse_driver import Client

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                pass
            Client("127.0.0.1", port=self.port, connect_timeout=2).execute("SELECT 1")
            return True
        except Exception:
            return False


class Cluster:
    """`shards` servers on loopback, each a shard of the cluster `pdns_test`."""

    def __init__(self, folder: str, shards: int = 2) -> None:
        self.folder = folder
        self.ports = [free_port() for _ in range(shards)]
        self.servers = [Server(os.path.join(folder, f"shard{n + 1}"), port, self.ports)
                        for n, port in enumerate(self.ports)]
        try:
            for server in self.servers:
                server.start()
        except BaseException:
            self.close()
            raise

    def url(self, database: str = "pdns", cluster: bool = True) -> str:
        """The `store` setting naming every server (failover) and the cluster."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        return f"clickhouse://{hosts}/{database}" + (f"?cluster={CLUSTER}" if cluster else "")

    def close(self) -> None:
        for server in self.servers:
            server.stop()

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)


class Chdb:
    """A current ClickHouse in this process (chdb), behind the store's Connection:
    the same SQL text as a server gets, answers read back as TabSeparated."""

    def __init__(self, folder: str) -> None:
        from chdb import session

        self.session = session.Session(folder)

    def __call__(self, location, hosts, query_timeout) -> Chdb:  # the store's `connect`
        return self

    def version(self) -> str:
        return self.rows("SELECT version()")[0][0].decode()

    def rows(self, sql: str) -> list[tuple]:
        answer = self.session.query(sql, "TabSeparated").bytes()
        lines = answer[:-1].split(b"\n") if answer else []  # every row ends in a newline (one empty field: b"")
        return [tuple(_unescape(field) for field in line.split(b"\t")) for line in lines]

    def stream(self, sql: str):
        yield from self.rows(sql)

    def insert(self, table: str, rows: list[tuple]) -> None:
        from collector.clickhouse.schema import COLUMNS
        from collector.clickhouse.sql import listed

        for start in range(0, len(rows), 5000):
            values = ", ".join(f"({listed(row)})" for row in rows[start:start + 5000])
            self.session.query(f"INSERT INTO {table} ({COLUMNS}) VALUES {values}")

    def close(self) -> None:
        pass

    def cleanup(self) -> None:
        self.session.close()


_ESCAPES = {b"b": b"\b", b"f": b"\f", b"r": b"\r", b"n": b"\n", b"t": b"\t", b"0": b"\0", b"'": b"'", b"\\": b"\\"}


def _unescape(field: bytes) -> bytes:
    return re.sub(rb"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), field, flags=re.DOTALL)
