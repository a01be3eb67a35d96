"""``wsrl guest-agent``: run inside a guest and stream working-set histograms to the host.

A typer command over :func:`wsrl.agent.cli.run_agent_command`, which ``python -m wsrl.agent``
runs too (same options, the help of :data:`wsrl.agent.cli.OPTION_HELP`); see
:mod:`wsrl.agent.guest_agent` for what it does. An :class:`~wsrl.agent.guest_agent.AgentError`
becomes a :class:`~wsrl.errors.WsrlError`: one line on stderr, exit status 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wsrl.agent.cli import OPTION_HELP as H
from wsrl.agent.cli import run_agent_command
from wsrl.agent.guest_agent import DEFAULT_LRU_GEN_PATH, DEFAULT_PRESSURE_PATH, AgentError
from wsrl.agent.wire import PORT_NAME
from wsrl.errors import WsrlError


def guest_agent_command(
    port: Annotated[Path | None, typer.Option("--port", help=H["port"])] = None,
    port_name: Annotated[str, typer.Option("--port-name", help=H["port_name"])] = PORT_NAME,
    interval_s: Annotated[float, typer.Option("--interval-s", help=H["interval_s"])] = 2.0,
    source: Annotated[str, typer.Option("--source", help=H["source"])] = "lru_gen",
    lru_gen: Annotated[Path, typer.Option("--lru-gen", help=H["lru_gen"])] = DEFAULT_LRU_GEN_PATH,
    wsr_file: Annotated[Path | None, typer.Option("--wsr-file", help=H["wsr_file"])] = None,
    memcg: Annotated[str | None, typer.Option("--memcg", help=H["memcg"])] = None,
    pressure_file: Annotated[
        Path, typer.Option("--pressure-file", help=H["pressure_file"])
    ] = DEFAULT_PRESSURE_PATH,
    pressure_threshold: Annotated[
        float, typer.Option("--pressure-threshold", help=H["pressure_threshold"])
    ] = 10.0,
    pressure_poll_s: Annotated[float, typer.Option("--pressure-poll-s", help=H["pressure_poll_s"])] = 1.0,
    age_every: Annotated[int, typer.Option("--age-every", help=H["age_every"])] = 1,
    count: Annotated[int, typer.Option("--count", help=H["count"])] = 0,
    write_timeout_s: Annotated[float, typer.Option("--write-timeout-s", help=H["write_timeout_s"])] = 5.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help=H["verbose"])] = False,
) -> None:
    """Run INSIDE a guest: stream working-set histograms and pressure reports to the host."""
    try:
        run_agent_command(
            port=port,
            port_name=port_name,
            interval_s=interval_s,
            source=source,
            lru_gen=lru_gen,
            wsr_file=wsr_file,
            memcg=memcg,
            pressure_file=pressure_file,
            pressure_threshold=pressure_threshold,
            pressure_poll_s=pressure_poll_s,
            age_every=age_every,
            count=count,
            write_timeout_s=write_timeout_s,
            verbose=verbose,
        )
    except AgentError as exc:
        raise WsrlError(str(exc)) from None
