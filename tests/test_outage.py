"""A collector outage during a long run: afterwards every file below the cap
arrives, oldest first; what the cap removed is the oldest and is logged."""

from __future__ import annotations

import os
import time

from sensor.spool import spooldir
from tests.uploadkit import CHANNEL, contents, needs_sshd, same, spool_files, start_tool
from uploader.upload import pending


@needs_sshd
def test_files_made_during_an_outage_arrive_in_order_when_it_ends(collector, tmp_path):
    server, config, spool = collector
    with open(config) as handle:
        settings = handle.read()
    with open(config, "w") as handle:  # room for 12 files of 20 kB
        handle.write(settings + 'max_spool_size_kbytes="240"\n')
    uploader = start_tool("upload", "-c", config)
    try:
        made = []
        for batch in range(4):  # the sensor keeps writing while the collector is away
            made += spool_files(spool, [20_000] * 5, start=1_790_000_000 + 300 * batch)
            time.sleep(1.5)
        survivors = made[-12:]
        expected = contents(survivors)
        server.start()
        deadline = time.monotonic() + 60
        waiting = spooldir.folder(spool, spooldir.WAITING, CHANNEL)
        while time.monotonic() < deadline and (pending(waiting) or not same(expected, server)):
            time.sleep(0.2)
        assert same(expected, server)
        assert pending(spooldir.folder(spool, spooldir.WAITING, CHANNEL)) == []
        arrived = sorted(os.listdir(server.path("up", CHANNEL)))
        assert arrived == sorted(os.path.basename(p) for p in survivors)  # the 8 oldest were trimmed
        by_time = sorted(arrived, key=lambda n: os.stat(server.path("up", CHANNEL, n)).st_mtime_ns)
        assert by_time == [os.path.basename(p) for p in survivors]  # sent oldest first
    finally:
        uploader.terminate()
        _, err = uploader.communicate(timeout=30)
    assert err.count("without uploading it") == 8
    assert err.count("uploaded sensor1.") == 12
