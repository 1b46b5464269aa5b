"""supervisord as the node's main process, with one change: SIGHUP means what it means to a Patroni user, a
reload of the configuration (D31), and not supervisord's "restart every program", which would stop PostgreSQL
and release the leader key. The signal is passed to the REST API program, which reloads as for POST /reload.

Run as `python -m shared.launcher.supervise -n -c FILE` (haven FILE execs it)."""

from __future__ import annotations

import signal
import sys

from supervisor import supervisord

RELOADS_ON_HUP = "restapi"


class Supervisor(supervisord.Supervisor):  # type: ignore[misc]
    def handle_signal(self) -> None:
        options = self.options
        sig = options.get_signal()
        if sig == signal.SIGHUP and options.mood != supervisord.SupervisorStates.SHUTDOWN:
            options.logger.info("received SIGHUP: the node reloads its configuration (nothing is restarted)")
            group = self.process_groups.get(RELOADS_ON_HUP)
            for process in group.processes.values() if group is not None else ():
                try:
                    problem = process.signal(signal.SIGHUP)
                except AssertionError as exc:  # a state supervisord does not signal in
                    problem = str(exc)
                if problem:
                    options.logger.warn(f"SIGHUP not passed on: {problem}")
            return
        if sig:
            options.get_signal = lambda: sig  # handled as supervisord does
            try:
                super().handle_signal()
            finally:
                del options.get_signal


def main() -> None:
    supervisord.Supervisor = Supervisor  # go() builds the Supervisor by this name
    supervisord.main(sys.argv[1:])


if __name__ == "__main__":
    main()
