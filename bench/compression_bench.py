"""Benchmark: the NMSG deflate level on several kinds of traffic, beside `nmsgtool -z`.

The level was first chosen on the benchmark's own capture; on traffic it
was not tuned on the same level may write larger files than the
reference. For each capture this prints two tables.

- Compression alone, per codec: the sensor's own containers of that
  capture (a run with nmsg_compress="no", so the container boundaries are
  the sensor's, wall-second syncs included) compressed in this process by
  libdeflate at each of `--levels` and by zlib at each of `--zlib-levels`,
  timed with this thread's CPU clock (the part the level changes, free of
  the rest of the sensor and of the other process on a shared machine):
  bytes per packet as the file would hold them (container header, length
  prefix and deflated body) and CPU-s per million packets, medians of
  `--rounds` rounds, the codecs in a rotated order each round.
- Whole processes, when `--nmsgtool` names a reference binary:
  `nmsgtool -V base -T dnsqr -p CAPTURE -z -w OUT` and `sie-dns-sensor run
  --pcap` at each of `--sensor-levels` (nmsg_compress_level), alternating
  round by round: CPU-s per million packets (user + sys from wait4, all
  threads), bytes/packet, and the sensor's CPU as a multiple of the
  reference's.

Bytes per packet divide by the packets in the capture file, the same
figure for both programs. The captures, made once under bench/out/:
`benchmark` (bench/traffic.py's million packets, sensor_bench's own),
`resolutions` (bench/resolutions.py, 500,000 exchanges from the root,
seed 2: other names, referrals, EDNS, a quarter over IPv6) and `corpus`
(every capture of ../shared/corpus in time order, raw IP given an
Ethernet header; no address filter, as the corpus's reference files were
made). `--capture PATH=ADDRS` measures one of your own instead (ADDRS:
the resolver's addresses, comma-separated; empty for no filter); with
`--only` beside it, those default ones too.

    python -m bench.compression_bench
    python -m bench.compression_bench --nmsgtool /opt/nmsg/bin/nmsgtool --sensor-levels 2,6,7
    python -m bench.compression_bench --only corpus --capture held-out.pcap=192.0.2.53
"""

from __future__ import annotations

import dataclasses
import heapq
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator

import click
import deflate
import dpkt

from bench import resolutions, sensor_bench, traffic
from sensor.spool import nmsg

OUT = os.path.join(sensor_bench.HERE, "out")
CORPUS = os.path.join(sensor_bench.REPO, "..", "shared", "corpus")
RESOLVERS = f"{traffic.RESOLVER4},{traffic.RESOLVER6}"
LINKTYPE_RAW = 101  # raw IP as pcap files carry it (DLT_RAW is 12 or 14 in memory)
_CONTAINER_OVERHEAD = nmsg.HEADER.size + 4  # header and the inflated length before each deflated body


@dataclasses.dataclass
class Capture:
    name: str
    path: str
    resolvers: str  # DNSQR_RES_ADDRS for both programs; "" for no filter (and no DNSQR_CAPTURE_RD)


# ------------------------------------------------------------ captures
def _ethernet_frames(path: str) -> Iterator[tuple[float, bytes]]:
    """(time, Ethernet frame) of a classic pcap file, raw IP given an Ethernet header; a file
    that ends inside a record header (the corpus has one) ends there, as libpcap stops there."""
    with open(path, "rb") as handle:
        reader = dpkt.pcap.Reader(handle)
        link = reader.datalink()
        if link not in (dpkt.pcap.DLT_EN10MB, dpkt.pcap.DLT_RAW, LINKTYPE_RAW):
            raise click.ClickException(f"{path}: link type {link} is neither Ethernet nor raw IP")
        try:
            for ts, frame in reader:
                if link != dpkt.pcap.DLT_EN10MB:
                    frame = (traffic.ETH_V6 if frame[0] >> 4 == 6 else traffic.ETH_V4) + frame
                yield ts, frame
        except dpkt.NeedData:
            click.echo(f"{path}: ends inside a record; merged up to there", err=True)


def write_corpus(corpus: str, path: str) -> int:
    """Every capture under `corpus`, merged in time order into one Ethernet pcap; the frames written."""
    captures = sorted(os.path.join(root, name) for root, _, names in os.walk(corpus)
                      for name in names if name.endswith(".pcap"))
    if not captures:
        raise click.ClickException(f"{corpus}: no .pcap files")
    count = 0
    with open(path + ".part", "wb") as handle:
        handle.write(dpkt.pcap.LEFileHdr(snaplen=262144, linktype=dpkt.pcap.DLT_EN10MB).pack())
        for ts, frame in heapq.merge(*(_ethernet_frames(c) for c in captures), key=lambda item: item[0]):
            sec = int(ts)
            usec = min(999_999, round((ts - sec) * 1e6))
            handle.write(dpkt.pcap.LEPktHdr(tv_sec=sec, tv_usec=usec, caplen=len(frame), len=len(frame)).pack())
            handle.write(frame)
            count += 1
    os.rename(path + ".part", path)
    return count


def _benchmark(path: str) -> None:
    traffic.write(path, 1_000_000)


def _resolutions(path: str) -> None:
    resolutions.write(path, path[: -len(".pcap")] + ".hints", 500_000, seed=2)


DEFAULT_CAPTURES = (  # name, file under bench/out, how it is made, DNSQR_RES_ADDRS
    ("benchmark", "traffic-1000000.pcap", _benchmark, RESOLVERS),  # sensor_bench's own capture
    ("resolutions", "resolutions-500000-2.pcap", _resolutions, RESOLVERS),
    ("corpus", "corpus.pcap", None, ""),
)


def default_captures(names: tuple[str, ...], corpus: str) -> list[Capture]:
    """The kinds of traffic asked for, made under bench/out/ the first time."""
    os.makedirs(OUT, exist_ok=True)
    made = []
    for name, file, make, resolvers in DEFAULT_CAPTURES:
        path = os.path.join(OUT, file)
        if name not in names:
            continue
        if make is None and not os.path.isdir(corpus):
            click.echo(f"{corpus} is not here: no corpus capture")
            continue
        if not os.path.exists(path):
            click.echo(f"making {path} ...")
            make(path) if make is not None else write_corpus(corpus, path)
        made.append(Capture(name, path, resolvers))
    return made


def count_packets(path: str) -> int:
    with open(path, "rb") as handle:
        return sum(1 for _ in dpkt.pcap.Reader(handle))


# ------------------------------------------------------ the sensor's containers
def sensor_config(capture: Capture, compress: bool, level: int | None = None) -> str:
    """The production configuration of sensor_bench, for this capture and level; a file's path."""
    lines = [f'DNSQR_RES_ADDRS="{capture.resolvers}"', 'DNSQR_CAPTURE_RD="0"'] if capture.resolvers else []
    lines += ['interval="60"', 'upload="yes"', 'archive="no"', 'spool_format="nmsg"',
              f'nmsg_compress="{"yes" if compress else "no"}"']
    if level is not None:
        lines.append(f'nmsg_compress_level="{level}"')
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as handle:
        handle.write("\n".join(lines) + "\n")
    return handle.name


def container_bodies(capture: Capture) -> list[bytes]:
    """The bodies of the sensor's uncompressed containers for this capture."""
    config = sensor_config(capture, compress=False)
    try:
        run = sensor_bench.one_run(capture.path, config, keep_files=_bodies_of)
    finally:
        os.unlink(config)
    return [body for bodies in run["kept"] for body in bodies]


def _bodies_of(path: str) -> list[bytes]:
    with open(path, "rb") as stream:
        return [body for flags, body, _ in nmsg.containers(stream, allow_cut=False) if flags == 0]


# --------------------------------------------------------- compression alone
Codec = tuple[str, int, Callable[[bytes, int], bytes]]


def codecs(levels: list[int], zlib_levels: list[int]) -> list[Codec]:
    """libdeflate (what the sensor uses) at each level, then zlib (what nmsgtool uses, at 6)."""
    return [("libdeflate", level, deflate.zlib_compress) for level in levels] + [
        ("zlib", level, zlib.compress) for level in zlib_levels
    ]


def compress_all(bodies: list[bytes], codec: Codec) -> tuple[int, float]:
    """(bytes the containers would take, this thread's CPU seconds to deflate them)."""
    _, level, compress = codec
    started = time.thread_time()
    deflated = sum(len(compress(body, level)) for body in bodies)
    return deflated + _CONTAINER_OVERHEAD * len(bodies), time.thread_time() - started


def check_round_trip(bodies: list[bytes], codec: Codec) -> None:
    """Whatever a codec writes must inflate back with zlib, as readers do."""
    _, level, compress = codec
    if bodies and zlib.decompress(compress(bodies[0], level)) != bodies[0]:
        raise click.ClickException(f"{codec[0]} level {level} does not inflate back to its input")


def compression_table(bodies: list[bytes], packets: int, all_codecs: list[Codec], rounds: int) -> dict:
    """Codec -> (bytes/packet, median CPU-s per million packets)."""
    for codec in all_codecs:
        check_round_trip(bodies, codec)
    sizes: dict[tuple[str, int], int] = {}
    cpu: dict[tuple[str, int], list[float]] = {codec[:2]: [] for codec in all_codecs}
    for index in range(rounds):
        shift = index % len(all_codecs)
        for codec in all_codecs[shift:] + all_codecs[:shift]:  # drift on a shared machine hits all alike
            size, seconds = compress_all(bodies, codec)
            sizes[codec[:2]] = size
            cpu[codec[:2]].append(seconds)
    return {key: (sizes[key] / packets, statistics.median(cpu[key]) * 1e6 / packets) for key in cpu}


# ------------------------------------------------------------ whole processes
def reference_run(nmsgtool: str, capture: Capture) -> dict:
    """`nmsgtool -z` on the capture: CPU seconds (wait4) and output bytes."""
    env = dict(os.environ)
    if capture.resolvers:
        env.update(DNSQR_RES_ADDRS=capture.resolvers, DNSQR_CAPTURE_RD="0")
    work = tempfile.mkdtemp(prefix="sie-bench-ref-")
    try:
        out = os.path.join(work, "out.nmsg")
        argv = [nmsgtool, "-V", "base", "-T", "dnsqr", "-p", capture.path, "-z", "-w", out]
        process = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise click.ClickException(f"nmsgtool failed: {process.stderr.read()}")
        with open(out, "rb") as stream:
            containers = sum(1 for _ in nmsg.containers(stream, allow_cut=False))
        return {"cpu": usage.ru_utime + usage.ru_stime, "output": os.path.getsize(out), "containers": containers}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def whole_runs(capture: Capture, nmsgtool: str, levels: list[int], rounds: int) -> dict:
    """Label -> list of runs, the reference and the sensor at each level taking turns."""
    configs = {f"sensor, level {level}": sensor_config(capture, compress=True, level=level) for level in levels}
    runners: list[tuple[str, Callable[[], dict]]] = [("nmsgtool -z", lambda: reference_run(nmsgtool, capture))]
    runners += [(label, lambda c=config: sensor_bench.one_run(capture.path, c)) for label, config in configs.items()]
    results: dict[str, list[dict]] = {label: [] for label, _ in runners}
    try:
        for index in range(rounds):
            shift = index % len(runners)
            for label, run in runners[shift:] + runners[:shift]:
                results[label].append(run())
    finally:
        for config in configs.values():
            os.unlink(config)
    return results


# -------------------------------------------------------------------- report
def _levels(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _extra(text: str) -> Capture:
    path, _, resolvers = text.partition("=")
    if not os.path.isfile(path):
        raise click.BadParameter(f"{path}: no such file")
    return Capture(os.path.basename(path), path, resolvers)


def report_compression(capture: Capture, packets: int, bodies: list[bytes], table: dict,
                       reference: float | None) -> None:
    raw = sum(len(body) for body in bodies)
    click.echo(f"\n{capture.name}: {packets:,} packets, {len(bodies)} containers, "
               f"{raw / packets:.1f} bytes/packet uncompressed")
    click.echo("codec        level  bytes/packet  vs nmsgtool -z  compression CPU-s per million packets")
    for (name, level), (size, cpu) in table.items():
        versus = f"{size / reference:.4f}x" if reference else "-"
        click.echo(f"{name:<12} {level:>5}  {size:>12.3f}  {versus:>14}  {cpu:>8.3f}")


def report_whole(capture: Capture, packets: int, runs: dict) -> float:
    """Print the whole-process medians; the reference's bytes/packet."""
    reference_cpu = statistics.median(r["cpu"] for r in runs["nmsgtool -z"])
    reference_size = runs["nmsgtool -z"][0]["output"] / packets
    click.echo(f"\n{capture.name}, whole processes, medians of {len(runs['nmsgtool -z'])} alternating runs "
               f"(nmsgtool: {runs['nmsgtool -z'][0]['containers']} containers):")
    for label, rows in runs.items():
        cpu = statistics.median(r["cpu"] for r in rows)
        size = statistics.median(r["output"] for r in rows) / packets
        click.echo(f"  {label:<18} {cpu * 1e6 / packets:6.2f} CPU-s per million packets "
                   f"({cpu / reference_cpu:.2f}x the reference), {size:.3f} bytes/packet "
                   f"({size / reference_size:.4f}x); runs: " + " ".join(f"{r['cpu']:.2f}" for r in rows))
    return reference_size


@click.command()
@click.option("--nmsgtool", default=None, help="the reference's nmsgtool: also run whole processes beside it")
@click.option("--levels", default="1,2,3,4,5,6,7,8,9,10,11,12", show_default=True, help="libdeflate levels")
@click.option("--zlib-levels", default="1,4,6,9", show_default=True, help="zlib levels, for comparison")
@click.option("--sensor-levels", default="2,6,7", show_default=True, help="nmsg_compress_level of whole sensor runs")
@click.option("--rounds", default=5, show_default=True, help="rounds (medians) of each measurement")
@click.option("--corpus", default=CORPUS, show_default=True, help="folder of captures to merge into `corpus`")
@click.option("--only", multiple=True, help="only these default captures (benchmark, resolutions, corpus)")
@click.option("--capture", "extra", multiple=True, help="another capture: PATH=RESOLVER_ADDRESSES")
def main(nmsgtool: str | None, levels: str, zlib_levels: str, sensor_levels: str, rounds: int, corpus: str,
         only: tuple[str, ...], extra: tuple[str, ...]) -> None:
    names = only or (() if extra else tuple(name for name, *_ in DEFAULT_CAPTURES))
    captures = default_captures(names, corpus)
    captures += [_extra(text) for text in extra]
    all_codecs = codecs(_levels(levels), _levels(zlib_levels))
    for capture in captures:
        packets = count_packets(capture.path)
        reference = None
        if nmsgtool:
            runs = whole_runs(capture, nmsgtool, _levels(sensor_levels), rounds)
            reference = report_whole(capture, packets, runs)
        bodies = container_bodies(capture)
        report_compression(capture, packets, bodies, compression_table(bodies, packets, all_codecs, rounds),
                           reference)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
