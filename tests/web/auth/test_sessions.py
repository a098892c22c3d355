from __future__ import annotations

from bastion.stores import MemoryStore
from bastion.web.auth.sessions import SessionManager


def manager(now: list[float]) -> SessionManager:
    kv = MemoryStore(clock=lambda: now[0])
    return SessionManager(kv, idle_seconds=1800, absolute_seconds=12 * 3600, clock=lambda: now[0])


async def test_a_session_ends_after_the_idle_timeout() -> None:
    now = [1000.0]
    sessions = manager(now)
    session = await sessions.create(user_id=1, username="ada", is_admin=False)
    now[0] += 1799
    assert await sessions.load(session.id) is not None
    now[0] += 1801
    assert await sessions.load(session.id) is None


async def test_activity_keeps_a_session_alive_only_until_the_absolute_timeout() -> None:
    now = [0.0]
    sessions = manager(now)
    session = await sessions.create(user_id=1, username="ada", is_admin=False)
    for _ in range(23):
        now[0] += 1700
        assert await sessions.load(session.id) is not None
    now[0] += 1700  # 11.8 h of steady use, then past 12 h
    now[0] += 1000
    assert await sessions.load(session.id) is None


async def test_ending_all_sessions_of_a_user_spares_other_users() -> None:
    now = [0.0]
    sessions = manager(now)
    a1 = await sessions.create(user_id=1, username="ada", is_admin=False)
    a2 = await sessions.create(user_id=1, username="ada", is_admin=False)
    b = await sessions.create(user_id=2, username="bob", is_admin=False)
    await sessions.end_all_for(1)
    assert await sessions.load(a1.id) is None
    assert await sessions.load(a2.id) is None
    assert await sessions.load(b.id) is not None
    later = await sessions.create(user_id=1, username="ada", is_admin=False)
    assert await sessions.load(later.id) is not None


async def test_the_store_never_sees_the_session_id_itself() -> None:
    kv = MemoryStore()
    sessions = SessionManager(kv, idle_seconds=60, absolute_seconds=600)
    session = await sessions.create(user_id=1, username="ada", is_admin=True)
    assert all(session.id not in key for key in kv._data)
    assert all(session.id.encode() not in value for _, value in kv._data.values())


async def test_a_user_s_sessions_are_listed_and_ended_one_by_one() -> None:
    now = [1000.0]
    sessions = manager(now)
    first = await sessions.create(
        user_id=1, username="ada", is_admin=False, client_ip="192.0.2.1", user_agent="A"
    )
    second = await sessions.create(user_id=1, username="ada", is_admin=False)
    await sessions.create(user_id=2, username="bob", is_admin=False)
    listed = await sessions.list_for(1)
    assert [(s.client_ip, s.user_agent) for s in listed] == [("192.0.2.1", "A"), ("", "")]
    assert first.id not in repr(listed) and len(listed[0].handle) == 32
    assert await sessions.end(1, listed[0].handle) is True
    assert await sessions.load(first.id) is None
    assert await sessions.load(second.id) is not None
    assert await sessions.end(1, listed[0].handle) is False
    assert await sessions.end(2, listed[1].handle) is False  # not bob's to end this way
    assert [s.handle for s in await sessions.list_for(1)] == [listed[1].handle]


async def test_signed_out_expired_and_globally_ended_sessions_leave_the_list() -> None:
    now = [1000.0]
    sessions = manager(now)
    gone = await sessions.create(user_id=1, username="ada", is_admin=False)
    await sessions.delete(gone.id)
    assert await sessions.list_for(1) == []
    await sessions.create(user_id=1, username="ada", is_admin=False)
    now[0] += 1801
    assert await sessions.list_for(1) == []
    await sessions.create(user_id=1, username="ada", is_admin=False)
    await sessions.end_all_for(1)
    assert await sessions.list_for(1) == []
