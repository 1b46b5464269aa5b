"""Before a stopped instance starts as a replica of a leader, or once a running replica follows a new leader: did
it diverge, and if so pg_rewind or remove it (C22-C26, J9; docs/protocol.md, the rewind paragraph). Runs in the
worker thread, inside pg.start, pg.demote and pg.follow.

The check runs when use_pg_rewind or remove_data_directory_on_diverged_timelines is on (C26). It reads the leader's
timeline and history over a replication connection (the replication user, password from the pgpass file), the local
position from pg_controldata (after crash recovery in single-user mode when a primary stopped uncleanly) and, for a
former primary, the end of its shutdown checkpoint from pg_waldump (divergence.py decides).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from services.postmaster import divergence, files, pg, render
from services.postmaster.core import parse_history_file, parse_lsn
from services.postmaster.render import Upstream
from services.postmaster.settings import Settings
from services.postmaster.sql import Session, SqlError, replication_command

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 5.0
PROMOTION_WAIT_S = 2.0  # a running replica's check waits this long for a new leader that is still promoting
_SAVED_FILES = ("postgresql.conf", "postgresql.base.conf", "pg_hba.conf", "pg_ident.conf", "postgresql.auto.conf")
_CHECKPOINT_SQL = """
SELECT pg_is_in_recovery() AS in_recovery, timeline_id AS checkpoint_timeline,
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS timeline
  FROM pg_control_checkpoint()
"""


class Outcome(StrEnum):
    NOT_NEEDED = "not needed"
    DONE = "done"
    FAILED = "failed"
    REMOVED = "removed"
    NOT_POSSIBLE = "not possible"  # diverged, no rewind allowed or possible, nothing removed
    UNKNOWN = "unknown"  # the check itself failed (leader unreachable, local position unreadable)


@dataclass(frozen=True)
class LeaderTimeline:
    sysid: str
    timeline: int
    history: tuple[tuple[int, int, str], ...]


class Rewind:
    def __init__(self, settings: Settings, dynamic_pg: Mapping[str, Any]) -> None:
        self.settings = settings
        self.dynamic_pg = dynamic_pg
        self.use_rewind = settings.use_pg_rewind(dynamic_pg)
        self.foreign = False  # running_diverged() found a leader of another cluster

    @property
    def enabled(self) -> bool:
        return self.use_rewind or self.settings.remove_data_directory_on_diverged_timelines

    def ensure_not_diverged(self, leader: Upstream) -> Outcome | None:
        """None when the check is off; else what was found and done. The instance must be stopped."""
        if not self.enabled:
            return None
        settings = self.settings
        files.write_pgpass(settings, [leader], superuser=True)
        controldata = pg.controldata(settings)
        if divergence.needs_crash_recovery(controldata):
            self.crash_recovery()
            controldata = pg.controldata(settings)
        local = divergence.local_position(controldata)
        if local is None:
            log.error(
                "cannot tell the local timeline and position (state %r)", controldata.get("Database cluster state")
            )
            return Outcome.UNKNOWN
        try:
            remote = self.leader_timeline(leader)
        except (SqlError, ValueError, IndexError) as exc:
            log.error("cannot read the timeline of %s: %s", leader.name, exc)
            return Outcome.UNKNOWN
        if remote.sysid != controldata.get("Database system identifier"):
            return self._resolve(leader, f"{leader.name} belongs to another cluster (system identifier {remote.sysid})")
        if not self._diverged(local, remote):
            return Outcome.NOT_NEEDED
        if not divergence.can_rewind(controldata):
            return self._resolve(leader, "neither wal_log_hints nor data checksums are on in the data directory")
        return self._resolve(leader, None)

    def running_diverged(self, leader: Upstream) -> bool | None:
        """C22 for a running replica that now follows `leader`: is the WAL it received or replayed (IDENTIFY_SYSTEM
        on itself: its replay timeline, and the end of the WAL it flushed) past the point where the leader's history
        left that timeline? None when it cannot tell yet: the leader is unreachable or still promoting."""
        settings = self.settings
        me = Upstream(settings.name, "", settings.local_host, settings.port)
        files.write_pgpass(settings, [leader, me], superuser=True)
        if not self.leader_promoted(leader):
            return None
        try:
            remote = self.leader_timeline(leader)
            params = settings.remote_conn_params(me.host, me.port, settings.replication)
            params["application_name"] = "haven-rewind-check"
            ((sysid, timeline, lsn, *_),) = replication_command(params, ["IDENTIFY_SYSTEM"], timeout=CHECK_TIMEOUT_S)
            position = divergence.LocalPosition(int(timeline), parse_lsn(str(lsn)) or 0, in_recovery=True)
        except (SqlError, ValueError, IndexError, TypeError) as exc:
            log.error("cannot compare this replica's timeline with the one of %s: %s", leader.name, exc)
            return None
        if str(sysid) != remote.sysid:
            log.error("%s belongs to another cluster (system identifier %s, here %s)", leader.name, remote.sysid, sysid)
            self.foreign = True
            return True
        return self._diverged(position, remote)

    def leader_promoted(self, leader: Upstream) -> bool:
        """The leader took the key before its promotion ended: wait a little for it to leave recovery (A60)."""
        settings = self.settings
        users = [settings.superuser, *([settings.rewind] if settings.rewind.get("username") else [])]
        for user in users:
            session = Session(settings.remote_conn_params(leader.host, leader.port, user), timeout=CHECK_TIMEOUT_S)
            try:
                deadline = time.monotonic() + PROMOTION_WAIT_S
                while session.query("SELECT pg_is_in_recovery() AS r")[0]["r"]:
                    if time.monotonic() >= deadline:
                        log.warning("%s is still in recovery: the divergence check waits", leader.name)
                        return False
                    time.sleep(0.05)
                return True
            except SqlError as exc:
                log.warning("cannot ask %s as %s whether it is in recovery: %s", leader.name, user.get("username"), exc)
            finally:
                session.close()
        return False

    def resolve_running_divergence(self, leader: Upstream) -> Outcome:
        """After running_diverged() said so and the replica stopped: rewind or remove it (C23-C25). pg_rewind
        decides from the stopped data directory whether anything must be rewound."""
        if self.foreign:
            return self._resolve(leader, f"{leader.name} belongs to another cluster")
        if not divergence.can_rewind(pg.controldata(self.settings)):
            return self._resolve(leader, "neither wal_log_hints nor data checksums are on in the data directory")
        return self._resolve(leader, None)

    def _diverged(self, local: divergence.LocalPosition, remote: LeaderTimeline) -> bool:
        verdict, switchpoint = divergence.assess(local, remote.timeline, remote.history)
        if verdict == divergence.Verdict.CHECK_END and switchpoint is not None:
            end = self.checkpoint_end(local)
            diverged = divergence.diverged_at_checkpoint_end(end, switchpoint)
            detail = f"checkpoint end {divergence.format_lsn(end) if end is not None else 'unknown'}"
        else:
            diverged = verdict == divergence.Verdict.DIVERGED
            detail = f"local position {divergence.format_lsn(local.lsn)}"
        log.info(
            "local timeline %d, %s; leader timeline %d%s, history %s: %s",
            local.timeline,
            detail,
            remote.timeline,
            f", switchpoint {divergence.format_lsn(switchpoint)}" if switchpoint is not None else "",
            divergence.history_excerpt(remote.history, local.timeline),
            "diverged" if diverged else "not diverged",
        )
        return diverged

    def _resolve(self, leader: Upstream, impossible: str | None) -> Outcome:
        """Diverged: rewind, or remove, or leave it (C23-C25). impossible: why pg_rewind cannot run."""
        settings = self.settings
        if self.use_rewind and impossible is None:
            if self.rewind(leader):
                return Outcome.DONE
            return self._after_failed_rewind(leader)
        if self.use_rewind:
            log.error("pg_rewind is not possible: %s", impossible)
        if settings.remove_data_directory_on_diverged_timelines:
            self.remove("remove_data_directory_on_diverged_timelines is set")
            return Outcome.REMOVED
        return Outcome.NOT_POSSIBLE

    def _after_failed_rewind(self, leader: Upstream) -> Outcome:
        """C24: when the leader went away during pg_rewind and the data directory is still sound, try again later
        (UNKNOWN: the brain repeats the check); a rewind that failed against a healthy leader, or left pg_control
        unreadable, is a failure, after which either remove_data_directory flag removes the data directory."""
        intact = divergence.can_rewind(pg.controldata(self.settings))
        if intact and not self.leader_promoted(leader):
            log.warning("pg_rewind failed because %s became unreachable: trying again later", leader.name)
            return Outcome.UNKNOWN
        if not intact:
            log.error("pg_rewind left a data directory whose pg_control cannot be read")
        for flag in ("remove_data_directory_on_rewind_failure", "remove_data_directory_on_diverged_timelines"):
            if getattr(self.settings, flag):
                self.remove(f"{flag} is set")
                return Outcome.REMOVED
        return Outcome.FAILED

    # ---- reading ----------------------------------------------------------------------------------------------------

    def leader_timeline(self, leader: Upstream) -> LeaderTimeline:
        """IDENTIFY_SYSTEM, then TIMELINE_HISTORY of its timeline (none on timeline 1), as the replication user."""
        params = self.settings.remote_conn_params(leader.host, leader.port, self.settings.replication)
        params["application_name"] = "haven-rewind-check"
        ((sysid, timeline, *_),) = replication_command(params, ["IDENTIFY_SYSTEM"], timeout=CHECK_TIMEOUT_S)
        timeline = int(timeline)
        history: tuple[tuple[int, int, str], ...] = ()
        if timeline > 1:
            ((_, content, *_),) = replication_command(params, [f"TIMELINE_HISTORY {timeline}"], timeout=CHECK_TIMEOUT_S)
            text = bytes(content).decode() if isinstance(content, bytes | memoryview) else str(content)
            history = parse_history_file(text)
        return LeaderTimeline(str(sysid), timeline, history)

    def checkpoint_end(self, local: divergence.LocalPosition) -> int | None:
        cmd = [
            self.settings.binary("pg_waldump"),
            "-p",
            os.path.join(self.settings.data_dir, "pg_wal"),
            "-t",
            str(local.timeline),
            "-s",
            divergence.format_lsn(local.lsn),
            "-n",
            "2",
        ]
        try:
            _, output = pg.run_capture(cmd, timeout=60)
        except pg.PgError as exc:
            log.error("%s", exc)
            return None
        end = divergence.checkpoint_end_from_waldump(output, local.lsn)
        if end is None:
            log.error("cannot find the end of the checkpoint record in pg_waldump's output: %s", output.strip()[-500:])
        return end

    # ---- acting -----------------------------------------------------------------------------------------------------

    def crash_recovery(self) -> bool:
        """C23: the target of pg_rewind must be shut down cleanly; a primary that crashed recovers in single-user
        mode (no signal file: single-user mode cannot run as a standby), keeping WAL to archive as .ready."""
        settings = self.settings
        for name in ("standby.signal", "recovery.signal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(settings.data_dir, name))
        cmd = [
            settings.binary("postgres"),
            "--single",
            "-D",
            settings.data_dir,
            f"--config_file={settings.conf_path}",
            "-c",
            "archive_mode=on",
            "-c",
            "archive_command=false",
            "postgres",
        ]
        log.info("crash recovery in single-user mode")
        try:
            pg.run(cmd, timeout=pg.LONG_TIMEOUT_S)
        except pg.PgError as exc:
            log.error("crash recovery in single-user mode failed: %s", exc)
            return False
        return True

    def rewind(self, leader: Upstream) -> bool:
        settings = self.settings
        if not self.wait_leader_checkpoint(leader):
            return False
        self.archive_ready_wal()
        user = settings.rewind_user
        params = settings.remote_conn_params(leader.host, leader.port, user)
        conninfo = " ".join(f"{k}={render.conninfo_value(v)}" for k, v in params.items())
        cmd = [settings.binary("pg_rewind"), f"--target-pgdata={settings.data_dir}", f"--source-server={conninfo}"]
        if render.recovery_parameters(settings, self.dynamic_pg, None).get("restore_command"):
            cmd.append("--restore-target-wal")
        if settings.config_dir != settings.data_dir:
            cmd.append(f"--config-file={settings.conf_path}")
        saved = self._save_config_files()
        started = time.monotonic()
        try:
            pg.run(cmd, timeout=pg.LONG_TIMEOUT_S, env=pg.clean_env({"PGOPTIONS": "-c statement_timeout=0"}))
        except pg.PgError as exc:
            log.error("pg_rewind from %s failed: %s", leader.name, exc)
            return False
        finally:
            self._restore_config_files(saved)  # pg_rewind copied the leader's
        log.info("pg_rewind from %s as %s done in %.3fs", leader.name, user.get("username"), time.monotonic() - started)
        return True

    def wait_leader_checkpoint(self, leader: Upstream) -> bool:
        """pg_rewind reads the leader's timeline from its pg_control, which shows the new timeline only after the
        first checkpoint since the promotion: wait for it, asking for a CHECKPOINT once as the superuser (A60);
        when the superuser cannot connect, only wait, as the rewind user."""
        settings = self.settings
        attempts: list[tuple[Mapping[str, str], bool]] = [(settings.superuser, True)]
        if settings.rewind.get("username"):
            attempts.append((settings.rewind, False))
        for user, may_checkpoint in attempts:
            try:
                return self._wait_checkpoint(leader, user, may_checkpoint)
            except SqlError as exc:
                log.warning("cannot check the checkpoint of %s as %s: %s", leader.name, user.get("username"), exc)
        return False

    def _wait_checkpoint(self, leader: Upstream, user: Mapping[str, str], may_checkpoint: bool) -> bool:
        settings = self.settings
        session = Session(settings.remote_conn_params(leader.host, leader.port, user), timeout=10.0)
        deadline = time.monotonic() + settings.pg_ctl_timeout
        asked = not may_checkpoint
        try:
            while True:
                row = session.query(_CHECKPOINT_SQL)[0]
                if row["in_recovery"] or row["checkpoint_timeline"] == row["timeline"]:
                    return True
                if not asked:
                    log.info("asking %s for a CHECKPOINT after its promotion", leader.name)
                    session.query("CHECKPOINT", timeout=settings.pg_ctl_timeout)
                    asked = True
                    continue
                if time.monotonic() >= deadline:
                    log.error("%s did not checkpoint after its promotion", leader.name)
                    return False
                time.sleep(0.1)
        finally:
            session.close()

    def archive_ready_wal(self) -> None:
        """C23: WAL segments still waiting for archive_command are archived before pg_rewind may remove them."""
        params, _ = render.effective_parameters(self.settings, self.dynamic_pg)
        mode = str(params.get("archive_mode", "off")).lower()
        command = str(params.get("archive_command") or "")
        if mode not in ("on", "always", "true", "1") or not command or command.strip() in ("false", "/bin/false"):
            return
        status_dir = os.path.join(self.settings.data_dir, "pg_wal", "archive_status")
        for ready in sorted(glob.glob(os.path.join(status_dir, "*.ready"))):
            name = os.path.basename(ready)[: -len(".ready")]
            path = os.path.join("pg_wal", name)
            cmd = command.replace("%p", path).replace("%f", name).replace("%%", "%")
            log.info("archiving %s before pg_rewind", name)
            proc = subprocess.run(cmd, shell=True, cwd=self.settings.data_dir, env=pg.clean_env(), check=False)
            if proc.returncode != 0:
                log.error("archive_command failed for %s (exit code %d)", name, proc.returncode)
                return
            os.rename(ready, ready[: -len(".ready")] + ".done")

    def remove(self, why: str) -> None:
        log.warning("%s: removing the data directory %s", why, self.settings.data_dir)
        files.wipe_data_dir(self.settings)

    def _save_config_files(self) -> dict[str, bytes]:
        saved = {}
        for name in _SAVED_FILES:
            path = os.path.join(self.settings.data_dir, name)
            with contextlib.suppress(OSError), open(path, "rb") as f:
                saved[path] = f.read()
        return saved

    def _restore_config_files(self, saved: Mapping[str, bytes]) -> None:
        mode = files.file_mode(self.settings)
        for path, content in saved.items():
            try:
                with open(path, "wb") as f:
                    os.fchmod(f.fileno(), mode)
                    f.write(content)
            except OSError as exc:
                log.error("cannot restore %s: %s", path, exc.strerror)
