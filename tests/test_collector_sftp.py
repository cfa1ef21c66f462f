"""SFTP uploads to a collector, set up as the README's recipe says, with real parts.

The README ("Receiving: `add-sensor`") gives the machine's sshd a
`Match Group sie-sftp-sensors` block: a chroot a sensor, internal-sftp
forced, the sensor's collector folder bind-mounted into the chroot. Here
that block, read out of README.md, runs in a private OpenSSH sshd
(Debian's stock settings around it but PAM off, loopback, a port of its
own), with only the group's name and the chroot's base folder changed, so
a machine where the recipe is really configured is left alone. The chroot base is
under /run (sshd wants every folder of a chroot's path root-owned and not
writable by others: /tmp is not), and the sshd runs in a mount namespace
of its own, so its bind mounts die with it.

Two sensors, each a Unix user in the group, upload real spool files with
the sensor's own uploader (`sie-upload`, upload_method="sftp"); a user
standing in for sie-dns-collector, whose group owns the sensors' folders,
runs `sie-dns-collector ingest --once`: every file must be claimed (a
rename out of what the SFTP user wrote), committed and kept in done/,
under the sensor whose login sent it. Then a sensor's login must be
confined: nothing written outside its `up`, no other sensor's folder in
sight, no command, no shell, no pty, no forwarding.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pwd
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from collector import incoming
from sensor.spool import spooldir
from tests import sshd as sshd_helper
from tests.collectorkit import collector_config, resolution, write_spool
from tests.uploadkit import CHANNEL, code_readable_by_others, run_tool, uploader_keys, write_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
RECIPE_GROUP, RECIPE_BASE = "sie-sftp-sensors", "/srv/sie-sftp"  # as the README names them


def _reason() -> str | None:
    reason = sshd_helper.available()
    if reason:
        return reason
    for tool in ("unshare", "mount", "groupadd", "usermod"):
        if not shutil.which(tool):
            return f"needs {tool}"
    if subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True).returncode:
        return "cannot make a mount namespace here (unshare --mount)"
    if not code_readable_by_others():
        return "the ingester runs as the collector user, who cannot read this checkout (it is under a private folder)"
    return None


REASON = _reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")  # marks: conftest.MARKS


def recipe() -> str:
    """The README's Match block, word for word (the Markdown code block's indentation taken off)."""
    with open(README, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    start = lines.index(f"    Match Group {RECIPE_GROUP}")
    block = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith("        "):
            break
        block.append(line)
    return "".join(line[4:] + "\n" for line in block)


def run_collector(*args: str) -> subprocess.CompletedProcess:
    """`sie-dns-collector ARGS` from this checkout, its log on stderr."""
    env = dict(os.environ, PYTHONPATH=REPO, SIE_DNS_SENSOR_SYSLOG_SOCKET="/nonexistent/sie-test-no-syslog")
    return subprocess.run([sys.executable, "-m", "collector", *args], capture_output=True, text=True,
                          timeout=120, env=env)


@dataclass
class Sensor:
    """A sensor: its Unix user (its name), its spool, its sie-dns-sensor file, its files' names."""

    name: str
    spool: Path
    config: str
    files: list[str]


@dataclass
class Site:
    root: str  # collector_dir
    config: str  # the collector's file
    user: str  # stands in for sie-dns-collector
    base: str  # stands in for /srv/sie-sftp
    port: int
    host_key: str
    log: str
    sensors: list[Sensor]


def _namespace_of(pid: int | str) -> tuple[int, int]:
    """The mount namespace process `pid` is in: its /proc/PID/ns/mnt's (st_dev, st_ino)."""
    found = os.stat(f"/proc/{pid}/ns/mnt")
    return found.st_dev, found.st_ino


def _pin_namespace(server: subprocess.Popen, seconds: float = 10) -> tuple[int, tuple[int, int]] | None:
    """An open file of `server`'s own mount namespace (so it is not freed and its identity not
    given to another while the file is open), and that identity; None if it ends first.

    `unshare` makes the namespace after it starts: until then the process is in ours."""
    ours = _namespace_of("self")
    deadline = time.monotonic() + seconds
    while server.poll() is None:  # not reaped, so the pid is still the server's
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            fd = os.open(f"/proc/{server.pid}/ns/mnt", os.O_RDONLY)
            opened = os.fstat(fd)
            if (opened.st_dev, opened.st_ino) != ours:
                return fd, (opened.st_dev, opened.st_ino)
            os.close(fd)
        if time.monotonic() > deadline:
            raise RuntimeError(f"sshd's process (pid {server.pid}) is still in this mount namespace after {seconds} s")
        time.sleep(0.01)
    return None


def _processes_in(namespace: tuple[int, int]) -> list[int]:
    """The processes in mount namespace `namespace` ((st_dev, st_ino) of a /proc/PID/ns/mnt)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError):
                if _namespace_of(entry) == namespace:
                    found.append(int(entry))
    return found


def _kill_namespace(namespace: tuple[int, int], seconds: float = 10) -> None:
    """SIGKILL every process in mount namespace `namespace` (the caller holds it open, so it is
    the sshd's and no other's), until none is left: sshd and the sessions that outlive it."""
    if namespace == _namespace_of("self"):
        raise RuntimeError("refusing to kill the processes of this test's own mount namespace")
    deadline = time.monotonic() + seconds
    while found := _processes_in(namespace):
        for pid in found:
            # by pidfd, the namespace checked again once it is open: a pid freed and given to
            # another process since the scan is not signalled
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            try:
                if _namespace_of(pid) == namespace:
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError):
                pass  # gone meanwhile
            finally:
                os.close(pidfd)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {found} of sshd's mount namespace are still there after SIGKILL")
        time.sleep(0.02)


def _stop_server(server: subprocess.Popen, pinned: list) -> None:
    """Stop the unshare/sshd process and everything in its mount namespace, then let go of the
    namespace (`pinned`: [fd, identity] once it has been pinned)."""
    try:
        if pinned:
            _kill_namespace(pinned[1])  # sshd with its sessions, which outlive it
    finally:
        try:
            if server.poll() is None:
                server.kill()
            server.wait()  # SIGKILLed: a second kill after a timeout would change nothing
        finally:
            if pinned:
                os.close(pinned[0])


def _remove_account(kind: str, name: str, seconds: float = 5) -> None:
    """userdel/groupdel `name` (`kind`: "user"/"group"), the user's processes killed first, tried
    again for `seconds`; the test fails if it is still there."""
    deadline = time.monotonic() + seconds
    while True:
        if kind == "user":
            subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
        done = subprocess.run([f"{kind}del", name], capture_output=True, text=True)
        if done.returncode in (0, 6):  # 6: there is no such user/group (any more)
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{kind}del {name} failed (exit status {done.returncode}) for {seconds} s, "
                        f"so the {kind} is left on this machine: {done.stderr.strip()}")
        time.sleep(0.2)


def _remove_run(run: str, mounts: list[str]) -> None:
    for target in mounts:  # never here unless the namespace leaked one: take it out before removing
        if os.path.ismount(target):
            subprocess.run(["umount", target], capture_output=True)
    if not any(os.path.ismount(target) for target in mounts):
        shutil.rmtree(run, ignore_errors=True)


@pytest.fixture
def site(tmp_path):
    tag = uuid.uuid4().hex[:6]
    group = f"siesftp{tag}"
    mounts: list[str] = []
    # every step undone in reverse, each one even if another fails (the failures raised after)
    with contextlib.ExitStack() as cleanup:
        run = tempfile.mkdtemp(prefix="sie-sftp-test-", dir="/run")  # root's, 0755 on the way down
        cleanup.callback(_remove_run, run, mounts)
        os.chmod(run, 0o755)
        base, etc = os.path.join(run, "chroot"), os.path.join(run, "etc")
        os.makedirs(os.path.join(etc, "keys"))
        os.mkdir(base)
        root = tempfile.mkdtemp(prefix="sie-collector-", dir="/tmp")
        cleanup.callback(shutil.rmtree, root, ignore_errors=True)
        os.chmod(root, 0o755)
        subprocess.run(["groupadd", "--system", group], check=True, capture_output=True)
        cleanup.callback(_remove_account, "group", group)
        owner = sshd_helper.add_user(root)  # the collector's user: its home is collector_dir, as the package's
        cleanup.callback(_remove_account, "user", owner)
        config = collector_config(root, root, keep_days="1")
        incoming.make_folders(root)
        collector = pwd.getpwnam(owner)
        port = sshd_helper.free_port()
        host_key = os.path.join(etc, "host_key")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key], check=True)
        with open(host_key + ".pub") as handle:
            kind, blob = handle.read().split()[:2]
        sensors = []
        for number, count in enumerate((2, 1)):
            name = sshd_helper.add_user(os.path.join(run, f"home{number}"), "/usr/sbin/nologin")
            cleanup.callback(_remove_account, "user", name)
            subprocess.run(["usermod", "-a", "-G", group, name], check=True, capture_output=True)
            spool = tmp_path / name
            uploader_keys().generate(str(spool / "keys" / "upload"), comment=f"{name}.example")
            shutil.copy(spool / "keys" / "upload.pub", os.path.join(etc, "keys", name))
            (spool / "keys" / "known_hosts").write_text(f"[127.0.0.1]:{port} {kind} {blob}\n")
            # the collector's side: incoming/NAME, and up/ in it the sensor's, the collector's group, 2770
            sensor_dir = incoming.sensor_folder(root, name)
            up = os.path.join(sensor_dir, incoming.UP)
            os.makedirs(up)
            os.chown(sensor_dir, collector.pw_uid, collector.pw_gid)
            os.chmod(sensor_dir, 0o750)
            os.chown(up, pwd.getpwnam(name).pw_uid, collector.pw_gid)
            os.chmod(up, 0o2770)
            # the chroot: BASE/NAME root's, 0755, and up/ in it where that folder is mounted
            os.makedirs(os.path.join(base, name, "up"))
            mounts.append(os.path.join(base, name, "up"))
            files = []
            waiting = spooldir.folder(str(spool), spooldir.WAITING, CHANNEL)
            os.makedirs(waiting)
            for n in range(count):
                when = 1_790_000_000 + 60 * n
                path = os.path.join(waiting, spooldir.file_name(name, when, 0, "nmsg"))
                write_spool(path, resolution(f"h{n}.{name}.test", f"{name}.test", f"203.0.113.{10 * number + n}",
                                             when))
                files.append(os.path.basename(path))
            sensor_config = write_config(tmp_path / f"{name}.conf", spool, login=name,
                                         submitserver=f"127.0.0.1:{port}", upload_method="sftp")
            sensors.append(Sensor(name, spool, sensor_config, files))
        for folder, _dirs, names in os.walk(root):  # the collector's, as the package makes it
            for path in [folder, *(os.path.join(folder, f) for f in names)]:
                if not path.startswith(os.path.join(root, incoming.INCOMING) + os.sep):
                    os.chown(path, collector.pw_uid, collector.pw_gid)

        block = recipe()
        assert f"ChrootDirectory {RECIPE_BASE}/%u" in block, block
        sshd_config = os.path.join(etc, "sshd_config")
        log = os.path.join(etc, "sshd.log")
        with open(sshd_config, "w") as handle:
            # this sshd's own place, then Debian's stock sshd_config but for UsePAM (yes there: on a
            # host with systemd-logind, PAM starts a user@UID manager for each login, outside this
            # namespace, and the user cannot be removed; the recipe does not depend on PAM, and the
            # accounts' password field is "*", not locked), then the README's block
            handle.write(
                f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {etc}/sshd.pid\n"
                f"AuthorizedKeysFile {etc}/keys/%u\nPasswordAuthentication no\nPermitRootLogin no\n"
                "LogLevel VERBOSE\n"
                "KbdInteractiveAuthentication no\nUsePAM no\nX11Forwarding yes\nPrintMotd no\n"
                "AcceptEnv LANG LC_*\nSubsystem sftp /usr/lib/openssh/sftp-server\n\n"
                + block.replace(RECIPE_GROUP, group).replace(RECIPE_BASE, base)
            )
        os.makedirs("/run/sshd", exist_ok=True)
        checked = subprocess.run([sshd_helper.SSHD, "-t", "-f", sshd_config], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
        binds = "".join(
            f"mount --bind {shlex.quote(incoming.sensor_folder(root, s.name))}/up {shlex.quote(target)} && "
            for s, target in zip(sensors, mounts, strict=True))
        with open(log, "a") as errors:
            server = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                 f"{binds}exec {sshd_helper.SSHD} -D -e -f {shlex.quote(sshd_config)}"], stderr=errors)
        pinned: list = []  # [fd, (st_dev, st_ino)] of sshd's mount namespace, open until it is stopped
        cleanup.callback(_stop_server, server, pinned)
        pinned.extend(_pin_namespace(server) or ())
        sshd_helper.wait_listening(server, "127.0.0.1", port, log)
        assert pinned and pinned[1] != _namespace_of("self")
        for target in mounts:  # the bind mounts are the namespace's only
            assert not os.path.ismount(target) and not os.listdir(target)
        yield Site(root, config, owner, base, port, host_key, log, sensors)


def files_under(root: str) -> set[str]:
    return {os.path.relpath(os.path.join(folder, name), root)
            for folder, dirs, names in os.walk(root) for name in names + dirs}


def open_session(site: Site, sensor: Sensor):
    """A paramiko transport logged in as `sensor`, the host key checked."""
    import paramiko

    with open(site.host_key + ".pub") as handle:
        kind, blob = handle.read().split()[:2]
    transport = paramiko.Transport(("127.0.0.1", site.port))
    transport.connect(hostkey=paramiko.PKey.from_type_string(kind, base64.b64decode(blob)), username=sensor.name,
                      pkey=paramiko.PKey.from_path(str(sensor.spool / "keys" / "upload")))
    return transport


def test_sensors_upload_by_sftp_into_the_readme_chroot_and_the_ingester_takes_every_file(site):
    for sensor in site.sensors:
        sent = run_tool("upload", "-c", sensor.config, "--once")
        assert sent.returncode == 0, sent.stderr
        assert sent.stderr.count("uploaded ") == len(sensor.files), sent.stderr
        assert not os.listdir(spooldir.folder(str(sensor.spool), spooldir.WAITING, CHANNEL))

    ingested = run_collector("ingest", "-c", site.config, "--once", "--user", site.user)
    assert ingested.returncode == 0, ingested.stderr
    total = sum(len(sensor.files) for sensor in site.sensors)
    assert f"files={total} damaged=0" in ingested.stderr, (
        f"{ingested.stderr}; in incoming/: {' '.join(sorted(files_under(os.path.join(site.root, incoming.INCOMING))))}")
    assert incoming.waiting(site.root) == [] and incoming.claimed(site.root) == []
    collector = pwd.getpwnam(site.user)
    for sensor in site.sensors:
        # under the sensor whose login sent it (its folder is its identity), nothing left where it landed
        up = os.path.join(incoming.sensor_folder(site.root, sensor.name), incoming.UP)
        assert os.listdir(up) == [CHANNEL] and os.listdir(os.path.join(up, CHANNEL)) == []
        done = os.path.join(site.root, incoming.DONE, sensor.name, CHANNEL)
        assert sorted(os.listdir(done)) == sorted(sensor.files)
        # what made that possible: the channel folder and the files are the collector's group's to change
        folder = os.stat(os.path.join(up, CHANNEL))
        assert (folder.st_uid, folder.st_gid) == (pwd.getpwnam(sensor.name).pw_uid, collector.pw_gid)
        assert stat.S_IMODE(folder.st_mode) == 0o2770
        for name in sensor.files:
            assert stat.S_IMODE(os.stat(os.path.join(done, name)).st_mode) == 0o660
    for number, sensor in enumerate(site.sensors):
        for n in range(len(sensor.files)):
            found = run_collector("query", "rrset", "-c", site.config, f"h{n}.{sensor.name}.test", "--json")
            assert found.returncode == 0, found.stderr
            rdata = [json.loads(line)["rdata"] for line in found.stdout.splitlines()]
            assert [f"203.0.113.{10 * number + n}"] in rdata, found.stdout


def test_a_sensor_login_writes_only_its_up_folder_sees_no_other_sensor_and_runs_nothing(site):
    import paramiko

    sensor, other = site.sensors
    sent = run_tool("upload", "-c", other.config, "--once")  # something of another sensor's to look for
    assert sent.returncode == 0, sent.stderr
    theirs = f"/../{other.name}/up/{CHANNEL}/{other.files[0]}"
    transport = open_session(site, sensor)
    try:
        sftp = paramiko.SFTPClient.from_transport(transport)
        assert sftp.normalize(".") == "/"  # where the uploader's relative up/<channel> starts
        for folder in ("/", ".", "..", "/..", "/up/.."):
            assert sftp.listdir(folder) == ["up"], folder
        for path in (f"/{other.name}", f"/../{other.name}", f"../../{other.name}/up", theirs, "/proc", "/etc"):
            with pytest.raises(FileNotFoundError):
                sftp.stat(path)
        for path in ("/intruder", "../intruder", "/up/../intruder", f"/../{other.name}/up/intruder"):
            with pytest.raises(OSError):
                sftp.open(path, "w").close()
            with pytest.raises(OSError):
                sftp.mkdir(path)
        # (up/ itself is the sensor's: it may change its mode, to its own uploads' loss only)
        for change in (lambda: sftp.rename("/up", "/moved"), lambda: sftp.rmdir("/up"),
                       lambda: sftp.symlink("/up", "/link"), lambda: sftp.chmod("/", 0o777)):
            with pytest.raises(OSError):
                change()
        sftp.close()

        for request in ("exec", "shell"):  # internal-sftp forced: it says so and runs nothing
            channel = transport.open_session()
            if request == "exec":
                channel.exec_command(f"touch /up/ran-{request}; id")
            else:
                channel.invoke_shell()
                channel.sendall(b"id\n")
            status = channel.recv_exit_status()
            said = channel.makefile("rb").read() + channel.makefile_stderr("rb").read()
            channel.close()
            assert status != 0 and b"uid=" not in said, (request, status, said)
        channel = transport.open_session()
        with pytest.raises(paramiko.SSHException):
            channel.get_pty()
        channel.close()
        with pytest.raises(paramiko.ChannelException):
            transport.open_channel("direct-tcpip", ("127.0.0.1", site.port), ("127.0.0.1", 40000))
    finally:
        transport.close()
    # nothing of it anywhere: the chroots hold their empty mount points, the sensor's folder nothing
    for name in (sensor.name, other.name):
        assert os.listdir(os.path.join(site.base, name)) == ["up"]
    assert os.listdir(os.path.join(incoming.sensor_folder(site.root, sensor.name), incoming.UP)) == []
    theirs = os.path.join(incoming.sensor_folder(site.root, other.name), incoming.UP)
    assert files_under(theirs) == {CHANNEL, f"{CHANNEL}/{other.files[0]}"}
    assert sorted(os.listdir(site.base)) == sorted([sensor.name, other.name])
    with open(site.log) as handle:
        log = handle.read()
    assert f"Accepted publickey for {sensor.name}" in log
