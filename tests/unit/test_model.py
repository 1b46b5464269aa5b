"""The cluster model reads and writes Patroni's DCS values (B13-B20, W6, W7)."""

from __future__ import annotations

import json

from shared.model import Cluster, ClusterConfig, Failover, KeyValue, Member, Status, SyncState, TimelineHistory
from shared.model.member import LocalTags, filter_tags

MEMBER = {
    "conn_url": "postgres://10.0.0.1:5432/postgres",
    "api_url": "http://10.0.0.1:8008/patroni",
    "state": "running",
    "role": "replica",
    "version": "3.2.2",
    "xlog_location": 67395656,
    "timeline": 5,
    "replication_state": "streaming",
    "tags": {"clonefrom": True, "failover_priority": 3},
}


def test_member_value_W6_is_parsed() -> None:
    m = Member.from_node(12, "pg1", None, json.dumps(MEMBER))
    assert (m.name, m.version, m.state, m.role, m.lsn, m.timeline) == ("pg1", 12, "running", "replica", 67395656, 5)
    assert m.is_running and m.clonefrom and m.failover_priority == 3 and not m.nofailover
    assert m.patroni_version == (3, 2, 2) and m.replication_state == "streaming"
    assert m.conn_kwargs({"username": "rep", "password": None}) == {
        "host": "10.0.0.1",
        "port": 5432,
        "dbname": "postgres",
        "user": "rep",
    }


def test_malformed_member_value_gives_a_member_without_data_B15() -> None:
    for value in ("{not json", "[1, 2]", "", None):
        m = Member.from_node(1, "pg1", None, value)
        assert m.data == {} and m.conn_url is None and m.state == "unknown"


def test_legacy_governor_member_value_is_read_B16() -> None:
    m = Member.from_node(
        1, "pg1", None, "postgres://rep:pw@10.0.0.1:5432/postgres?application_name=http://10.0.0.1:8008/patroni"
    )
    assert m.api_url == "http://10.0.0.1:8008/patroni"
    assert m.conn_kwargs()["host"] == "10.0.0.1"


def test_tag_rules_A10_A11_F52() -> None:
    assert LocalTags({"nofailover": True}).failover_priority == 0
    assert LocalTags({"failover_priority": 0}).nofailover
    assert not LocalTags({"nofailover": False, "failover_priority": 0}).nofailover  # nofailover wins (3.2.2)
    assert LocalTags({}).failover_priority == 1
    assert filter_tags({"nofailover": False, "clonefrom": True, "custom": False, "nosync": False}) == {
        "clonefrom": True,
        "custom": False,
    }


def test_cluster_timeline_comes_from_history_B14() -> None:
    def timeline(value: str | None) -> int:
        keys = {"history": KeyValue(value, 1)} if value is not None else {}
        return Cluster.from_keys(keys).timeline

    assert timeline(None) == 0
    assert timeline("not json") == 0
    assert timeline("[]") == 1
    assert (
        timeline(
            json.dumps(
                [
                    [1, 25623960, "no recovery target specified", "2019-09-23T16:57:57+02:00"],
                    [2, 25624344, "no recovery target specified", "2019-09-24T09:22:33+02:00", "pg1"],
                ]
            )
        )
        == 3
    )


def test_other_keys_W7_are_parsed() -> None:
    assert Status.from_node('{"optime": 100, "slots": {"pg2": 90}}') == Status(100, {"pg2": 90})
    assert Status.from_node("12345").last_lsn == 12345  # legacy optime/leader
    assert json.loads(Status(100, {"a": 1}).to_value()) == {"optime": 100, "slots": {"a": 1}}
    sync = SyncState.from_node(4, '{"leader": "pg1", "sync_standby": "PG2,pg3"}')
    assert sync.members == ["PG2", "pg3"] and sync.matches("pg2") and not sync.matches("pg4")
    assert SyncState.from_node(4, '{"leader": "pg1", "quorum": 1, "sync_standby": null}').quorum == 1  # 4.x form
    f = Failover.from_node(3, '{"leader": "pg1", "member": "pg2", "scheduled_at": "2016-01-14T10:09:57.1394Z"}')
    assert f is not None and (f.leader, f.candidate) == ("pg1", "pg2") and f.scheduled_at is not None
    legacy = Failover.from_node(3, "pg1:pg2")
    assert legacy is not None and (legacy.leader, legacy.candidate) == ("pg1", "pg2")
    assert Failover.from_node(3, "{}") is None
    assert ClusterConfig.from_node(1, "{broken").data == {}
    assert TimelineHistory.from_node(1, '[[1, 2, "r", "t"]]').lines == ((1, 2, "r", "t"),)


def test_cluster_snapshot_from_keys_B13() -> None:
    keys = {
        "initialize": KeyValue("7268616322854375442", 1),
        "config": KeyValue('{"ttl": 30, "pause": true}', 2),
        "leader": KeyValue("pg1", 9),
        "members/pg1": KeyValue(json.dumps({**MEMBER, "role": "master"}), 3),
        "members/pg2": KeyValue(json.dumps(MEMBER), 4),
        "status": KeyValue('{"optime": 67395700}', 5),
    }
    cluster = Cluster.from_keys(keys)
    assert cluster.initialize == "7268616322854375442" and cluster.leader_name == "pg1"
    assert cluster.leader is not None and cluster.leader.conn_url == MEMBER["conn_url"]
    assert [m.name for m in cluster.members] == ["pg1", "pg2"] and cluster.last_lsn == 67395700
    assert cluster.pause and not cluster.is_unlocked
    assert cluster.get_clone_member("pg3") is not None  # pg2 is a running clonefrom member
    wire = {k: v.to_wire() for k, v in keys.items()}
    assert Cluster.from_wire(wire).leader_name == "pg1"


def test_a_leader_key_without_a_member_still_names_the_leader() -> None:
    cluster = Cluster.from_keys({"leader": KeyValue("ghost", 1)})
    assert cluster.leader_name == "ghost" and cluster.leader is not None and cluster.leader.conn_url is None


def test_slot_names_come_from_member_names_B20() -> None:
    from shared.model.member import slot_name_from_member_name

    assert slot_name_from_member_name("Node-1.example") == "node_1_example"
    assert slot_name_from_member_name("pg 1") == "pgu00321"
    assert len(slot_name_from_member_name("x" * 100)) == 63
