from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.web.middleware.client_ip import resolve_client

PEER = "10.0.0.2"


def scope(*forwarded: str, proto: str | None = None, peer: str = PEER) -> dict[str, object]:
    headers = [(b"x-forwarded-for", value.encode("latin-1")) for value in forwarded]
    if proto is not None:
        headers.append((b"x-forwarded-proto", proto.encode()))
    return {"type": "http", "scheme": "http", "client": (peer, 5000), "headers": headers}


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert resolve_client(scope("203.0.113.9"), 0) == (PEER, "http")


def test_one_trusted_hop_takes_the_address_that_proxy_appended() -> None:
    forged = scope("1.2.3.4, 203.0.113.9")
    assert resolve_client(forged, 1) == ("203.0.113.9", "http")


def test_two_trusted_hops_take_the_second_entry_from_the_right() -> None:
    assert resolve_client(scope("6.6.6.6, 203.0.113.9, 10.1.1.1"), 2)[0] == "203.0.113.9"


def test_several_header_lines_are_read_as_one_list() -> None:
    assert resolve_client(scope("6.6.6.6", "203.0.113.9"), 1)[0] == "203.0.113.9"


@pytest.mark.parametrize(
    "header",
    ["", "not-an-ip", "203.0.113.9:8080", "unknown", "1.2.3.4, ", "999.1.1.1"],
)
def test_unparsable_entries_fall_back_to_the_socket_peer(header: str) -> None:
    assert resolve_client(scope(header), 1)[0] == PEER


def test_fewer_entries_than_trusted_hops_fall_back_to_the_socket_peer() -> None:
    assert resolve_client(scope("203.0.113.9"), 2)[0] == PEER
    assert resolve_client(scope(), 1)[0] == PEER


def test_non_ascii_header_falls_back_to_the_socket_peer() -> None:
    assert resolve_client(scope("203.0.113.9\xe9"), 1)[0] == PEER


def test_ipv6_and_ipv4_mapped_addresses_are_normalized() -> None:
    assert resolve_client(scope("2001:db8::1"), 1)[0] == "2001:db8::1"
    assert resolve_client(scope("::ffff:203.0.113.9"), 1)[0] == "203.0.113.9"
    assert resolve_client(scope(peer="::ffff:10.0.0.2"), 0)[0] == "10.0.0.2"


def test_scheme_comes_from_the_trusted_proxy_only() -> None:
    assert resolve_client(scope("203.0.113.9", proto="https"), 1) == ("203.0.113.9", "https")
    assert resolve_client(scope("203.0.113.9", proto="https"), 0) == (PEER, "http")
    assert resolve_client(scope("203.0.113.9", proto="gopher"), 1)[1] == "http"


def test_a_peer_that_is_not_an_address_becomes_a_placeholder() -> None:
    assert resolve_client(scope(peer="testclient"), 0)[0] == "0.0.0.0"


@given(
    prefix=st.lists(st.text(st.characters(max_codepoint=0xFF), max_size=40), max_size=6),
    real=st.ip_addresses(v=4).map(str),
)
def test_a_client_chosen_prefix_never_becomes_the_client_address(
    prefix: list[str], real: str
) -> None:
    # The trusted proxy appends what it saw, whatever the client sent before it.
    header = ", ".join([*(p.replace(",", "") for p in prefix), real])
    resolved = resolve_client(scope(header), 1)[0]
    if header.isascii():
        assert resolved == real
    else:
        assert resolved == PEER  # undecodable header: the socket peer, never a guess
