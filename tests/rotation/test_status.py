from __future__ import annotations

from bastion.rotation.status import delta


def test_a_delta_holds_only_what_changed_at_any_depth() -> None:
    before = {
        "web": {
            "state": "running",
            "active_replica": "a",
            "replicas": {"a": {"state": "running", "cpu": 1.0}, "b": {"state": "exited"}},
        }
    }
    after = {
        "web": {
            "state": "running",
            "active_replica": "b",
            "replicas": {"a": {"state": "exited", "cpu": None}, "b": {"state": "running"}},
        },
        "api": {"state": "paused"},
    }
    assert delta(before, after) == {
        "web": {
            "active_replica": "b",
            "replicas": {"a": {"state": "exited", "cpu": None}, "b": {"state": "running"}},
        },
        "api": {"state": "paused"},
    }
    assert delta(after, after) == {}
    assert delta(after, {"api": {"state": "paused"}}) == {"web": None}
