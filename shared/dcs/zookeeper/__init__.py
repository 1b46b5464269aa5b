"""The ZooKeeper DCS (section `zookeeper:`, B31/F33/F59) on kazoo; Exhibitor (exhibitor.py) builds on it.

Layout: each key is the znode `/<namespace>/<scope>/<key>` holding the raw value (utf-8), as Patroni
writes it; `members` and `optime` are parent znodes, never keys. `leader` and `members/<name>` are
ephemeral znodes of our session (KeyValueTTL.session is its id), the other keys persistent. A version is
the znode's version: write/delete with a version are set/delete with it (BadVersion, NoNode -> False).

Session: its timeout is the ttl of the calls (before the first call, the configured ttl). Another ttl
opens a new session; our ephemeral znodes (leader, own member) move to it in one transaction (delete
with version + create ephemeral), so a ttl change neither drops the lock nor opens a gap in which another
node could take it. A LOST (expired) session is lost leadership: its ephemeral znodes are gone,
refresh_leader answers False, and nothing is re-created behind the brain's back.

The leader lease (haven's safety rule, DESIGN.md): ZooKeeper keeps an ephemeral znode while the session
lives, and the session lives while this process pings, even when the brain stopped refreshing. So
take_leader/refresh_leader also set a lease deadline = start of the call + ttl; when it passes without a
refresh, the lease thread deletes our leader znode (value == name, owner == our session, delete with the
version just read) and refresh_leader answers False. A hung brain loses the lock after ttl, as with etcd
leases or Consul sessions; a dead process loses it when ZooKeeper expires its session (ttl too).

Reads: a cache of every znode under the prefix, fed by watches (data and children watches on each znode,
an exists watch on the prefix while it is missing), read again in full on every (re)connection because
kazoo forgets its watches when a connection drops; our own writes are read back into it before the call
returns. load() serves it and raises DCSUnavailable while the session is not CONNECTED or the cache was
not read in full since it connected.

Timeouts (B31): a silent server is dropped after min(loop_wait - 2 s (>= 1 s), 2/3 of the session timeout)
without an answer to a ping; a TCP connect gives up after max(0.5, min(retry_timeout, ttl) / 4) s and the
next host is tried at once ("fail early, retry more often"); reconnections are retried every <= 1 s. Each
call honours its `timeout`. No request is queued while disconnected (it could run after its caller gave
up): one not sent is retried while time remains, one lost in flight is DCSUnavailable (unknown outcome).

Not supported: `write(..., ttl=...)` writes a persistent znode (TTL znodes need extendedTypesEnabled).

Modules: settings.py (the section, hosts, ACLs, timeouts), session.py (kazoo and one session), cache.py (the
watch-fed cache and load()), calls.py (one request within a deadline), backend.py (sessions, the contract's
operations, the leader lease).
"""

from __future__ import annotations

from shared.dcs.zookeeper.backend import LEASE_CALL_TIMEOUT_S, LEASE_RETRY_S, Lease, ZooKeeperBackend, is_ours
from shared.dcs.zookeeper.cache import CACHE_READ_TIMEOUT_S, CONTAINERS, Znode, snapshot_of
from shared.dcs.zookeeper.calls import RETRY_PAUSE_S
from shared.dcs.zookeeper.session import NotSent
from shared.dcs.zookeeper.settings import (
    DEFAULT_PORT,
    PERMISSIONS,
    Timings,
    ZooKeeperSettings,
    parse_acls,
    parse_hosts,
    timings,
)

__all__ = [
    "CACHE_READ_TIMEOUT_S",
    "CONTAINERS",
    "DEFAULT_PORT",
    "LEASE_CALL_TIMEOUT_S",
    "LEASE_RETRY_S",
    "PERMISSIONS",
    "RETRY_PAUSE_S",
    "Lease",
    "NotSent",
    "Timings",
    "Znode",
    "ZooKeeperBackend",
    "ZooKeeperSettings",
    "is_ours",
    "parse_acls",
    "parse_hosts",
    "snapshot_of",
    "timings",
]
