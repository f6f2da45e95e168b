"""`/metrics` gzipped from a fleet part deflated once per sample: one gzip member any reader takes."""

from __future__ import annotations

import gzip
import os
import zlib

import pytest

from forkscale.observe import gzipjoin
from forkscale.observe.fleet import FleetSample, VmMemory
from forkscale.observe.telemetry import Telemetry


@pytest.mark.parametrize("head,middle,tail", [
    (b"# HELP a\n", os.urandom(5000) + b"x" * 200_000, b"# EOF\n"), (b"", b"", b""), (b"h", b"", b"t"),
])
def test_a_joined_body_reads_back_with_single_and_multi_member_readers(head: bytes, middle: bytes, tail: bytes):
    body = gzipjoin.join(head, gzipjoin.part(middle), tail)
    assert gzip.decompress(body) == head + middle + tail
    single = zlib.decompressobj(16 + zlib.MAX_WBITS)  # what a reader of one member (curl, aiohttp) does
    assert single.decompress(body) == head + middle + tail and single.eof and single.unused_data == b""


def test_the_gzipped_scrape_is_the_plain_scrape_and_the_fleet_is_deflated_once_per_sample():
    t = Telemetry()
    t.set_fleet(FleetSample(vms=[VmMemory("p", f"vm-{i}", 1.0 * i, 2.0) for i in range(2000)]))
    t.prerender()
    accept = "application/openmetrics-text;version=1.0.0"
    plain, kind = t.exposition(accept)
    packed, kind2 = t.exposition_gzip(accept)
    assert kind == kind2 and zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(packed) == plain
    assert plain.endswith(b"# EOF\n") and b'forkscale_vm_memory_shared_bytes{pool="p",vm="vm-1999"}' in plain
    fleet = t._fleet.rendered(kind, None)  # type: ignore[arg-type]  (rendered already: no encoder needed)
    assert t._fleet.rendered(kind, None) is fleet  # type: ignore[arg-type]
