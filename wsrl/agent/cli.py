"""The ``wsrl guest-agent`` command (also ``python -m wsrl.agent``).

Defined here, not in :mod:`wsrl.cli`, so that ``python -m wsrl.agent`` in a guest imports only the
agent's modules; :mod:`wsrl.cli.agent_cmd` re-exports it for the ``wsrl`` command line.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated, Literal

import typer

from wsrl.agent.guest_agent import (
    DEFAULT_LRU_GEN_PATH,
    DEFAULT_PRESSURE_PATH,
    AgentConfig,
    AgentError,
    GuestAgent,
)
from wsrl.backends.guest_stream import PORT_NAME


def guest_agent_command(
    port: Annotated[
        Path | None,
        typer.Option("--port", help=f"Port device to write to (default: the virtio port named {PORT_NAME})."),
    ] = None,
    port_name: Annotated[
        str, typer.Option("--port-name", help="virtio-serial port name to look for.")
    ] = PORT_NAME,
    interval_s: Annotated[
        float, typer.Option("--interval-s", help="Seconds between histogram records.")
    ] = 2.0,
    source: Annotated[
        str, typer.Option("--source", help="lru_gen (MGLRU debugfs) or wsr (a page_age file).")
    ] = "lru_gen",
    lru_gen: Annotated[
        Path, typer.Option("--lru-gen", help="MGLRU's lru_gen file (read; written to age).")
    ] = DEFAULT_LRU_GEN_PATH,
    wsr_file: Annotated[
        Path | None, typer.Option("--wsr-file", help="memory.workingset.page_age file for --source wsr.")
    ] = None,
    memcg: Annotated[
        str | None, typer.Option("--memcg", help="Merge only this memcg and those below it (default: all).")
    ] = None,
    pressure_file: Annotated[
        Path, typer.Option("--pressure-file", help="PSI file polled for pressure reports.")
    ] = DEFAULT_PRESSURE_PATH,
    pressure_threshold: Annotated[
        float, typer.Option("--pressure-threshold", help="Report when 'some avg10' reaches this percent.")
    ] = 10.0,
    pressure_poll_s: Annotated[
        float, typer.Option("--pressure-poll-s", help="Seconds between PSI polls.")
    ] = 1.0,
    age_every: Annotated[
        int, typer.Option("--age-every", help="Age MGLRU every N rounds (0: never; lru_gen only).")
    ] = 1,
    count: Annotated[
        int, typer.Option("--count", help="Stop after N histogram records (0: run forever).")
    ] = 0,
    write_timeout_s: Annotated[
        float, typer.Option("--write-timeout-s", help="Drop a record the host does not take within this.")
    ] = 5.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every record sent.")] = False,
) -> None:
    """Run INSIDE a guest: stream working-set histograms and pressure reports to the host."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="wsrl guest-agent: %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if source not in ("lru_gen", "wsr"):
        raise AgentError(f"--source must be lru_gen or wsr, got {source!r}")
    chosen: Literal["lru_gen", "wsr"] = "wsr" if source == "wsr" else "lru_gen"
    config = AgentConfig(
        port=port,
        port_name=port_name,
        interval_s=interval_s,
        source=chosen,
        lru_gen_path=lru_gen,
        wsr_path=wsr_file,
        memcg=memcg,
        pressure_path=pressure_file,
        pressure_threshold=pressure_threshold,
        pressure_poll_s=pressure_poll_s,
        age_every=age_every,
        count=count,
        write_timeout_s=write_timeout_s,
    )
    agent = GuestAgent(config)

    def stop(signum: int, frame: FrameType | None) -> None:
        agent.stop()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        stats = agent.run()
    except KeyboardInterrupt:
        stats = agent.stats
    finally:
        signal.signal(signal.SIGTERM, previous)
    logging.getLogger(__name__).info(
        "sent %d histogram(s), %d pressure report(s); %d record(s) dropped, %d source error(s)",
        stats.histograms_sent,
        stats.pressure_sent,
        stats.records_dropped,
        stats.source_errors,
    )
