"""The production runner as the soak's child process, with a clock fault injector in front of its backends.

``python tests/soak/runner_child.py HOST_TOML CLOCK_FILE`` does what ``wsrl run --config HOST_TOML``
does (same config loader, same backends, same :class:`~wsrl.runner.daemon.Runner`, SIGTERM/SIGINT
end the current tick and relax the guests, exit 0), except that every real backend's readings pass
through :class:`ClockShift`: while ``CLOCK_FILE`` holds ``{"guest": NAME, "offset_ms": N}``, the
readings of guest NAME are stamped N ms off (a source whose clock jumped). Nothing else is changed:
the readings, applies and relaxes are the real backends'.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared fault injectors
from test_runner_support import ClockShiftBackend

from wsrl.backends.base import GuestBackend
from wsrl.runner.backend_registry import build_backends
from wsrl.runner.config import load_runner_config
from wsrl.runner.daemon import Runner


class ClockShift(ClockShiftBackend):
    """A real backend whose readings are stamped ``offset_ms`` off while the clock file says so."""

    def __init__(self, inner: GuestBackend, clock_file: Path) -> None:
        super().__init__(inner)
        self.clock_file = clock_file

    def current_offset_ms(self) -> int:
        try:
            order = json.loads(self.clock_file.read_text())
        except (OSError, ValueError):
            return 0
        return int(order["offset_ms"]) if order.get("guest") == self.name else 0

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)


def main(config_path: str, clock_file: str) -> int:
    config = load_runner_config(config_path)
    backends = [ClockShift(b, Path(clock_file)) for b in build_backends(config)]
    runner = Runner(config, backends=backends)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()
        runner.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        runner.start()
        runner.run(stop)
    except BaseException:
        runner.close()
        raise
    runner.shutdown(relax=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
