"""The guest agent's command line: ``python -m wsrl.agent`` (argparse) and the run both CLIs share.

:func:`run_agent_command` is what ``wsrl guest-agent`` (:mod:`wsrl.cli.agent_cmd`, typer) and
``python -m wsrl.agent`` (:func:`main`, the standard library's argparse) both run, with the options
and help of :data:`OPTION_HELP`. Standard library only, so that a minimal guest runs the agent
with nothing but python3.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Literal, NoReturn

from wsrl.agent.guest_agent import (
    DEFAULT_LRU_GEN_PATH,
    DEFAULT_PRESSURE_PATH,
    AgentConfig,
    AgentError,
    GuestAgent,
)
from wsrl.agent.wire import PORT_NAME

PROG = "wsrl guest-agent"
USER_ERROR_EXIT = 2
COMMAND_HELP = "Run INSIDE a guest: stream working-set histograms and pressure reports to the host."
"""One-line help of the command."""

OPTION_HELP: dict[str, str] = {
    "port": f"Port device to write to (default: the virtio port named {PORT_NAME}).",
    "port_name": "virtio-serial port name to look for.",
    "interval_s": "Seconds between histogram records.",
    "source": "lru_gen (MGLRU debugfs) or wsr (a page_age file).",
    "lru_gen": "MGLRU's lru_gen file (read; written to age).",
    "wsr_file": "memory.workingset.page_age file for --source wsr.",
    "memcg": "Merge only this memcg and those below it (default: all).",
    "pressure_file": "PSI file polled for pressure reports.",
    "pressure_threshold": "Report when 'some avg10' reaches this percent.",
    "pressure_poll_s": "Seconds between PSI polls.",
    "age_every": "Age MGLRU every N rounds (0: never; lru_gen only).",
    "count": "Stop after N histogram records (0: run forever).",
    "write_timeout_s": "Drop a record the host does not take within this.",
    "verbose": "Log every record sent.",
}
"""Help of each option, by parameter name (both command lines use it)."""


def run_agent_command(
    *,
    port: Path | None = None,
    port_name: str = PORT_NAME,
    interval_s: float = 2.0,
    source: str = "lru_gen",
    lru_gen: Path = DEFAULT_LRU_GEN_PATH,
    wsr_file: Path | None = None,
    memcg: str | None = None,
    pressure_file: Path = DEFAULT_PRESSURE_PATH,
    pressure_threshold: float = 10.0,
    pressure_poll_s: float = 1.0,
    age_every: int = 1,
    count: int = 0,
    write_timeout_s: float = 5.0,
    verbose: bool = False,
) -> None:
    """Run the agent until ``count`` histograms were sent, SIGTERM or Ctrl-C (see :data:`OPTION_HELP`).

    Raises:
        AgentError: settings that cannot work, no port, or a missing source (one line naming it).

    """
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


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one ``wsrl guest-agent: error:`` line, exit 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{PROG}: error: {message}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m wsrl.agent`` (the options of ``wsrl guest-agent``)."""
    cli = _Parser(prog="python -m wsrl.agent", description=COMMAND_HELP)
    h = OPTION_HELP
    cli.add_argument("--port", type=Path, default=None, help=h["port"])
    cli.add_argument("--port-name", default=PORT_NAME, help=h["port_name"])
    cli.add_argument("--interval-s", type=float, default=2.0, help=h["interval_s"])
    cli.add_argument("--source", default="lru_gen", help=h["source"])
    cli.add_argument("--lru-gen", type=Path, default=DEFAULT_LRU_GEN_PATH, help=h["lru_gen"])
    cli.add_argument("--wsr-file", type=Path, default=None, help=h["wsr_file"])
    cli.add_argument("--memcg", default=None, help=h["memcg"])
    cli.add_argument("--pressure-file", type=Path, default=DEFAULT_PRESSURE_PATH, help=h["pressure_file"])
    cli.add_argument("--pressure-threshold", type=float, default=10.0, help=h["pressure_threshold"])
    cli.add_argument("--pressure-poll-s", type=float, default=1.0, help=h["pressure_poll_s"])
    cli.add_argument("--age-every", type=int, default=1, help=h["age_every"])
    cli.add_argument("--count", type=int, default=0, help=h["count"])
    cli.add_argument("--write-timeout-s", type=float, default=5.0, help=h["write_timeout_s"])
    cli.add_argument("--verbose", "-v", action="store_true", help=h["verbose"])
    return cli


def main(argv: Sequence[str] | None = None) -> None:
    """Run the agent; a user error is one line on stderr and exit status 2."""
    args = parser().parse_args(argv)
    try:
        run_agent_command(**vars(args))
    except AgentError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
