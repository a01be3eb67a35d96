"""Real-component tests: a QEMU guest with MGLRU and a virtio balloon (see tests/testbed).

The guest boots once for the module. It runs workloads in memcgs /wsrl/cold, /wsrl/hot and
/wsrl/grow and sends live ``lru_gen`` dumps over virtio-serial; the tests parse them with wsrl's
parser and recount the raw text independently. They fail, never skip, without the testbed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from testbed import Dump, QemuGuest, qmp_execute

from wsrl.formats import FormatOptions, parse_bytes
from wsrl.histogram import Histogram

pytestmark = [pytest.mark.realvm, pytest.mark.qemu, pytest.mark.timeout(120)]

PAGE = 4096
MIB = 2**20
GUEST_RAM = 1024 * MIB
MEMCGS = {"/", "/wsrl", "/wsrl/cold", "/wsrl/hot", "/wsrl/grow"}
COLD_ANON = 96 * MIB  # tmpfs written once by the cold workload
COLD_FILE = 48 * MIB  # file read once by the cold workload
HOT_ANON = 16 * MIB  # shell string the hot workload holds and touches
HOT_FILE = 8 * MIB  # file the hot workload reads every second
SETTLE_S = 45.0
BALLOON_S = 30.0


def recount_pages(text: str) -> dict[str, dict[int, tuple[int, int]]]:
    """memcg path -> {generation seq: (anon pages, file pages)} summed over nodes, from raw text.

    Deliberately independent of wsrl's parser: plain ``split`` of the documented layout.
    """
    memcgs: dict[str, dict[int, tuple[int, int]]] = {}
    current: dict[int, tuple[int, int]] | None = None
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0] == "node":
            continue
        if fields[0] == "memcg":
            path = line.split(None, 2)[2] if len(fields) > 2 else ""
            current = memcgs.setdefault(path, {})
            continue
        assert current is not None, f"generation line before any memcg: {line!r}"
        assert len(fields) == 4 and all(f.isdigit() for f in fields), f"bad line {line!r}"
        seq, anon, file = int(fields[0]), int(fields[2]), int(fields[3])
        old_anon, old_file = current.get(seq, (0, 0))
        current[seq] = (old_anon + anon, old_file + file)
    return memcgs


def by_memcg(histograms: list[Histogram]) -> dict[str, tuple[int, int]]:
    """memcg path -> (anon bytes, file bytes) over all its nodes."""
    totals: dict[str, tuple[int, int]] = {}
    for h in histograms:
        anon, file = totals.get(h.guest, (0, 0))
        totals[h.guest] = (anon + h.total_bytes("anon"), file + h.total_bytes("file"))
    return totals


def parse(dump: Dump) -> list[Histogram]:
    return parse_bytes("lru_gen", dump.data, FormatOptions(page_size_bytes=PAGE))


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s waiting for {what}"
        time.sleep(poll_s)


def memcg_bytes(recount: dict[str, dict[int, tuple[int, int]]], path: str) -> tuple[int, int]:
    """(anon bytes, file bytes) of one memcg in a recount; (0, 0) when it is absent."""
    gens = recount.get(path, {}).values()
    return sum(a for a, _ in gens) * PAGE, sum(f for _, f in gens) * PAGE


def settled(recount: dict[str, dict[int, tuple[int, int]]]) -> bool:
    """The cold and hot workloads have allocated and read all their memory."""
    cold_anon, cold_file = memcg_bytes(recount, "/wsrl/cold")
    hot_anon, hot_file = memcg_bytes(recount, "/wsrl/hot")
    return cold_anon >= COLD_ANON and cold_file >= COLD_FILE and hot_anon >= HOT_ANON and hot_file >= HOT_FILE


@pytest.fixture(scope="module")
def settled_dump(qemu_guest: QemuGuest) -> Dump:
    """A live lru_gen dump taken once the workloads have allocated their memory."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        dump = qemu_guest.next_dump("lru_gen")
        recount = recount_pages(dump.data.decode())
        if settled(recount):
            return dump
        assert time.monotonic() < deadline, (
            f"workloads did not settle within {SETTLE_S:g} s: cold {memcg_bytes(recount, '/wsrl/cold')}, "
            f"hot {memcg_bytes(recount, '/wsrl/hot')} (anon, file) bytes; console:\n"
            f"{qemu_guest.console_tail()}"
        )


def test_guest_runs_mglru_on_the_cached_kernel(qemu_guest: QemuGuest) -> None:
    console = qemu_guest.console_log.read_text(errors="replace")
    assert f"wsrl-guest: kernel {qemu_guest.testbed.kernel_release}" in console
    assert "wsrl-guest: lru_gen enabled=0x0007" in console
    assert "FATAL" not in console


def test_live_lru_gen_parses_to_the_recounted_bytes(settled_dump: Dump) -> None:
    recount = recount_pages(settled_dump.data.decode())
    histograms = parse(settled_dump)
    parsed = by_memcg(histograms)

    assert set(parsed) == set(recount)
    assert set(parsed) >= MEMCGS, f"memcgs seen: {sorted(parsed)}"
    for path, gens in recount.items():
        anon_pages = sum(a for a, _ in gens.values())
        file_pages = sum(f for _, f in gens.values())
        assert parsed[path] == (anon_pages * PAGE, file_pages * PAGE), path
    assert all(h.node == 0 for h in histograms)
    assert {h.meta["memcg_id"] for h in histograms if h.guest == "/"} == {"1"}


def test_live_lru_gen_is_plausible_for_a_1_gib_guest(settled_dump: Dump) -> None:
    parsed = by_memcg(parse(settled_dump))
    total = sum(anon + file for anon, file in parsed.values())
    cold_anon, cold_file = parsed["/wsrl/cold"]
    # tmpfs pages are exact; the file read may have pulled a little readahead beyond the file.
    assert COLD_ANON <= cold_anon <= COLD_ANON + 4 * MIB
    assert COLD_FILE <= cold_file <= COLD_FILE + 4 * MIB
    hot_anon, hot_file = parsed["/wsrl/hot"]
    assert HOT_ANON <= hot_anon <= 4 * HOT_ANON  # the string (doubling it needs some scratch)
    assert HOT_FILE <= hot_file <= HOT_FILE + 4 * MIB
    assert sum(parsed["/wsrl/grow"]) > 0
    assert parsed["/wsrl"] == (0, 0)  # an inner node: its children's pages are theirs
    assert 160 * MIB <= total <= GUEST_RAM, f"{total} bytes on the LRUs of a 1 GiB guest"


def test_generations_age_between_dumps(qemu_guest: QemuGuest, settled_dump: Dump) -> None:
    later = qemu_guest.next_dump("lru_gen")
    assert later.seq > settled_dump.seq
    before = recount_pages(settled_dump.data.decode())
    after = recount_pages(later.data.decode())
    for path in MEMCGS:
        assert max(after[path]) > max(before[path]), f"{path} did not age"
        assert len(after[path]) >= 2, f"{path} has one generation only"
    cold = next(h for h in parse(later) if h.guest == "/wsrl/cold")
    assert len(cold.edges_ms) >= 2  # several generations with distinct ages
    assert cold.total_bytes() > 0


def test_lru_gen_full_lists_the_same_memcgs(qemu_guest: QemuGuest) -> None:
    full = qemu_guest.next_dump("lru_gen_full")
    assert set(by_memcg(parse(full))) >= MEMCGS


def balloon_actual(guest: QemuGuest) -> int:
    return int(guest.qmp("query-balloon")["actual"])


def test_qmp_socket_for_the_code_under_test_answers(qemu_guest: QemuGuest) -> None:
    result = asyncio.run(qmp_execute(qemu_guest.qmp_socket, "query-balloon", None, 10.0))
    assert result == {"actual": GUEST_RAM}


def test_balloon_inflates_and_deflates(qemu_guest: QemuGuest) -> None:
    assert balloon_actual(qemu_guest) == GUEST_RAM
    target = 768 * MIB
    try:
        qemu_guest.qmp("balloon", {"value": target})
        wait_until(lambda: balloon_actual(qemu_guest) <= target, BALLOON_S, "balloon at 768 MiB")
        assert balloon_actual(qemu_guest) >= target - 16 * MIB
    finally:
        qemu_guest.qmp("balloon", {"value": GUEST_RAM})
    wait_until(lambda: balloon_actual(qemu_guest) == GUEST_RAM, BALLOON_S, "balloon deflated")
