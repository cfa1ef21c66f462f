"""Coverage-guided fuzzing soak of packet decoding, reassembly and matching.

atheris (libFuzzer for Python) mutates inputs toward new coverage in
`sensor/`; each input is split into up to 8 datagrams that are fed to one
long-lived matcher (so state accumulates as on a real sensor: queries,
fragments, timeouts). Any exception escaping `feed`, or a bound broken
(table, fragment bytes), stops the run with the input that did it. At the
end it prints the number of inputs and the RSS at the start and the end.

    pip install atheris
    python -m bench.fuzz_soak --runs 10000000
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time

import atheris

with atheris.instrument_imports(include=["sensor"]):
    from sensor.matching.bpf import Vantage, parse_networks
    from sensor.matching.matcher import Matcher, Settings
    from sensor.spool.cbor import encode_record


from tests import packets as P

MATCHER = Matcher(
    Settings(vantage=Vantage(parse_networks(f"{P.RESOLVER},{P.RESOLVER6}")), table_max=4096, fragment_bytes=1 << 20)
)
STATE = {"inputs": 0, "clock": 1_700_000_000, "records": 0, "rss_start": 0.0, "started": 0.0, "runs": 0}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    STATE["inputs"] += 1
    for _ in range(provider.ConsumeIntInRange(1, 8)):
        STATE["clock"] += provider.ConsumeIntInRange(0, 3)
        packet = provider.ConsumeBytes(provider.ConsumeIntInRange(0, 1600))
        for record in MATCHER.feed(packet, STATE["clock"], provider.ConsumeIntInRange(0, 999_999_999)):
            encode_record(record)  # every record the matcher makes must encode
            STATE["records"] += 1
    if len(MATCHER.table) > MATCHER.settings.table_max:
        raise AssertionError("query table over its bound")
    if MATCHER.reassembler.held_bytes > MATCHER.settings.fragment_bytes:
        raise AssertionError("fragment memory over its bound")
    if STATE["inputs"] % 1_000_000 == 0:
        print(f"# {STATE['inputs']} inputs, max RSS {rss_mb():.1f} MB", file=sys.stderr, flush=True)
    if STATE["inputs"] == STATE["runs"]:
        report()  # libFuzzer ends the process from C, past Python's atexit


def report() -> None:
    seconds = time.monotonic() - STATE["started"]
    print(
        f"fuzz soak: {STATE['inputs']:,} inputs in {seconds:.0f} s ({STATE['inputs'] / max(seconds, 1):,.0f}/s), "
        f"{STATE['records']:,} records, no exception escaped; max RSS {STATE['rss_start']:.1f} MB at start, "
        f"{rss_mb():.1f} MB at the end; counters {dict(sorted(MATCHER.counters.items()))}",
        flush=True,
    )


def seed_corpus(directory: str) -> None:
    seeds = P.seed_datagrams()
    for i, seed in enumerate(seeds):
        # FuzzedDataProvider reads from the end for integers; a plain seed still gives a datagram
        with open(os.path.join(directory, f"seed{i}"), "wb") as handle:
            handle.write(seed + len(seed).to_bytes(2, "little") + b"\x01")


def main() -> None:
    runs = 10_000_000
    args = [a for a in sys.argv[1:]]
    if "--runs" in args:
        at = args.index("--runs")
        runs = int(args[at + 1])
        del args[at : at + 2]
    corpus = tempfile.mkdtemp(prefix="sie-fuzz-")
    seed_corpus(corpus)
    STATE["rss_start"] = rss_mb()
    STATE["started"] = time.monotonic()
    STATE["runs"] = runs
    atheris.Setup([sys.argv[0], f"-runs={runs}", "-max_len=4096", "-print_final_stats=1", *args, corpus], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
