"""Benchmark: the uploader against OpenSSH's own `sftp -b`, same files, same sshd.

Starts a private sshd on loopback (needs root: it adds a throwaway
sftp-only user), writes `--total-mb` of incompressible spool files, ships
them with `sie-upload`'s code, then the same files with `sftp -b`, and
prints both rates.

    python -m bench.upload_bench                 # 1024 MB in 64 MB files
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

import click

from sensor.service import config as configuration
from tests import sshd as sshd_helper
from uploader import keys
from uploader.upload import Uploader

CHANNEL = "ch202"


def make_files(directory: str, total_mb: int, file_mb: int) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    block = os.urandom(1 << 20)
    paths = []
    for i in range(max(1, total_mb // file_mb)):
        path = os.path.join(directory, f"bench.{1_790_000_000 + 60 * i}.000000.cbor.gz")
        with open(path, "wb") as handle:
            for j in range(file_mb):
                handle.write(block[j % 7 :] + block[: j % 7])
        paths.append(path)
    return paths


@click.command()
@click.option("--total-mb", default=1024, show_default=True)
@click.option("--file-mb", default=64, show_default=True)
def main(total_mb: int, file_mb: int) -> None:
    reason = sshd_helper.available()
    if reason:
        raise click.ClickException(reason)
    work = tempfile.mkdtemp(prefix="sie-upbench-")
    spool = os.path.join(work, "spool")
    key = os.path.join(spool, "keys", "upload")
    keys.generate(key, comment="bench")
    with open(key + ".pub") as handle:
        server = sshd_helper.Sshd(handle.read())
    try:
        known = os.path.join(spool, "keys", "known_hosts")
        with open(known, "w") as handle:
            handle.write(server.known_hosts_line())
        server.start()
        cfg = configuration.build(
            {
                "spooldir": (spool, "bench"),
                "uploadkey": (key, "bench"),
                "knownhosts": (known, "bench"),
                "login": (server.user, "bench"),
                "submitserver": (f"127.0.0.1:{server.port}", "bench"),
                "maxper": ("16", "bench"),
                "max_spool_size_kbytes": (str(4 * total_mb * 1024), "bench"),
            }
        )
        waiting = os.path.join(spool, "waiting", CHANNEL)
        paths = make_files(waiting, total_mb, file_mb)
        size = sum(os.path.getsize(p) for p in paths)
        started = time.perf_counter()
        uploader = Uploader(cfg)
        if not uploader.round() or uploader.uploaded != len(paths):
            raise click.ClickException(f"upload failed: {uploader.uploaded} of {len(paths)} files sent")
        ours = time.perf_counter() - started
        shutil.rmtree(server.path("up"))

        paths = make_files(waiting, total_mb, file_mb)
        batch = os.path.join(work, "batch")
        with open(batch, "w") as handle:
            handle.write(f"-mkdir up\n-mkdir up/{CHANNEL}\n")
            handle.writelines(f"put {p} up/{CHANNEL}/\n" for p in paths)
        argv = [
            "sftp", "-q", "-b", batch, "-P", str(server.port), "-i", key,
            "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            f"{server.user}@127.0.0.1",
        ]
        started = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        theirs = time.perf_counter() - started
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)
    mb = size / 1e6
    click.echo(f"{mb:.0f} MB in {len(paths)} files")
    click.echo(f"sie-upload (paramiko): {ours:.2f} s = {mb / ours:.1f} MB/s")
    click.echo(f"OpenSSH sftp -b:       {theirs:.2f} s = {mb / theirs:.1f} MB/s")
    click.echo(f"ratio: {theirs / ours:.2f} of OpenSSH's rate")


if __name__ == "__main__":
    main()
