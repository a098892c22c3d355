"""The egress policy: which resolved addresses a workflow's HTTP request may connect to."""

from __future__ import annotations

import pytest

from bastion.errors import InvalidInput
from bastion.workflows.egress import DEFAULT_DENY, EgressDenied, EgressPolicy, Endpoint
from bastion.workflows.errors import NodeFailed

DEFAULT = EgressPolicy.parse(DEFAULT_DENY)


@pytest.mark.parametrize(
    ("address", "denied_range"),
    [
        ("127.0.0.1", "127.0.0.0/8"),
        ("127.255.0.9", "127.0.0.0/8"),
        ("::1", "::1/128"),
        ("0.0.0.0", "0.0.0.0/8"),
        ("::", "::/128"),
        ("169.254.169.254", "169.254.0.0/16"),  # AWS, GCP, Azure, DigitalOcean, Oracle
        ("fd00:ec2::254", "fd00:ec2::254/128"),
        ("100.100.100.200", "100.100.100.200/32"),
        ("fe80::1", "fe80::/10"),
        ("224.0.0.1", "224.0.0.0/4"),
        ("ff02::1", "ff00::/8"),
        ("255.255.255.255", "255.255.255.255/32"),
    ],
)
def test_addresses_in_the_default_deny_list_are_refused_naming_the_range(
    address: str, denied_range: str
) -> None:
    with pytest.raises(EgressDenied) as caught:
        DEFAULT.permitted_address("target.example", 80, [address])
    assert str(caught.value) == (
        f"egress to target.example refused: resolves to {address}, "
        f"inside denied range {denied_range}"
    )


@pytest.mark.parametrize("address", ["93.184.216.34", "10.1.2.3", "2606:2800:220:1::1"])
def test_addresses_outside_the_deny_list_are_permitted(address: str) -> None:
    assert DEFAULT.permitted_address("target.example", 443, [address]) == address


@pytest.mark.parametrize(
    ("address", "as_ipv4"),
    [("::ffff:127.0.0.1", "127.0.0.1"), ("::ffff:a9fe:a9fe", "169.254.169.254")],
)
def test_ipv4_mapped_addresses_are_judged_as_the_ipv4_address(address: str, as_ipv4: str) -> None:
    with pytest.raises(EgressDenied, match=f"resolves to {as_ipv4}, inside denied range"):
        DEFAULT.permitted_address("mapped.example", 80, [address])


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a9fe:a9fe",  # NAT64: the gateway would connect to 169.254.169.254
        "2002:a9fe:a9fe::1",  # 6to4
        "::a9fe:a9fe",  # IPv4-compatible (deprecated, still parsed)
    ],
)
def test_ipv6_addresses_carrying_a_denied_ipv4_address_are_refused(address: str) -> None:
    with pytest.raises(EgressDenied, match=r"reaching 169\.254\.169\.254\), inside denied"):
        DEFAULT.permitted_address("embedded.example", 80, [address])


def test_a_name_with_one_public_and_one_denied_address_is_refused() -> None:
    with pytest.raises(EgressDenied, match=r"resolves to 127\.0\.0\.1"):
        DEFAULT.permitted_address("mixed.example", 80, ["93.184.216.34", "127.0.0.1"])


def test_a_name_with_only_permitted_addresses_gives_the_first() -> None:
    addresses = ["93.184.216.34", "2606:2800:220:1::1"]
    assert DEFAULT.permitted_address("dual.example", 80, addresses) == "93.184.216.34"


@pytest.mark.parametrize(
    "host",
    ["2130706433", "0x7f000001", "0x7f.1", "127.1", "::ffff:7f00:1", "::ffff:127.0.0.1"],
)
async def test_numeric_spellings_of_loopback_resolve_to_it_and_are_refused(host: str) -> None:
    with pytest.raises(EgressDenied, match=r"resolves to 127\.0\.0\.1, inside denied range"):
        await DEFAULT.resolve(host, 80)


async def test_a_hostname_resolving_into_a_denied_range_is_refused() -> None:
    with pytest.raises(
        EgressDenied, match=r"^egress to localhost refused: resolves to 127\.0\.0\.1"
    ):
        await DEFAULT.resolve("localhost", 80)


async def test_resolve_returns_the_address_that_was_checked() -> None:
    policy = EgressPolicy.parse(DEFAULT_DENY, allow=["127.0.0.1:8080"])
    assert await policy.resolve("localhost", 8080) == "127.0.0.1"
    assert await policy.resolve("::ffff:127.0.0.1", 8080) == "127.0.0.1"


async def test_a_name_that_does_not_resolve_fails_naming_it() -> None:
    with pytest.raises(NodeFailed, match=r"^cannot resolve no-such-host\.invalid"):
        await DEFAULT.resolve("no-such-host.invalid", 80)


def test_an_allowed_endpoint_opens_only_its_own_port() -> None:
    policy = EgressPolicy.parse(DEFAULT_DENY, allow=["127.0.0.1:8080"])
    assert policy.permitted_address("localhost", 8080, ["127.0.0.1"]) == "127.0.0.1"
    with pytest.raises(EgressDenied):
        policy.permitted_address("localhost", 8081, ["127.0.0.1"])
    with pytest.raises(EgressDenied):
        policy.permitted_address("localhost", 8080, ["127.0.0.2"])


def test_an_allowed_network_opens_every_port_in_it() -> None:
    policy = EgressPolicy.parse(DEFAULT_DENY, allow=["127.0.0.0/24", "[::1]:9000"])
    assert policy.permitted_address("a", 1, ["127.0.0.9"]) == "127.0.0.9"
    assert policy.permitted_address("a", 65535, ["127.0.0.1"]) == "127.0.0.1"
    assert policy.permitted_address("a", 9000, ["::1"]) == "::1"


def test_an_allowed_endpoint_covers_its_ipv4_mapped_form() -> None:
    policy = EgressPolicy.parse(DEFAULT_DENY, allow=["127.0.0.1:8080"])
    assert policy.permitted_address("a", 8080, ["::ffff:127.0.0.1"]) == "127.0.0.1"


def test_entries_written_as_ipv4_mapped_addresses_match_their_ipv4_form() -> None:
    policy = EgressPolicy.parse(["::ffff:10.0.0.0/104"], internal=["[::ffff:192.0.2.5]:5432"])
    with pytest.raises(EgressDenied, match=r"inside denied range 10\.0\.0\.0/8"):
        policy.permitted_address("lan", 80, ["10.1.1.1"])
    with pytest.raises(EgressDenied, match="own services"):
        policy.permitted_address("db", 5432, ["192.0.2.5"])


def test_an_internal_endpoint_is_refused_even_when_allowed() -> None:
    policy = EgressPolicy.parse(DEFAULT_DENY, allow=["127.0.0.0/8"], internal=["127.0.0.1:8000"])
    with pytest.raises(EgressDenied, match=r"127\.0\.0\.1:8000 is one of Bastion's own services"):
        policy.permitted_address("localhost", 8000, ["127.0.0.1"])
    assert policy.permitted_address("localhost", 8001, ["127.0.0.1"]) == "127.0.0.1"


def test_an_internal_endpoint_outside_the_deny_list_is_refused() -> None:
    # A database on the LAN: the default list does not cover 10.0.0.0/8, `internal` does.
    policy = EgressPolicy.parse(DEFAULT_DENY, internal=["10.0.0.5:5432", "[fd12::5]:6379"])
    with pytest.raises(EgressDenied, match="own services"):
        policy.permitted_address("db.lan", 5432, ["10.0.0.5"])
    with pytest.raises(EgressDenied, match="own services"):
        policy.permitted_address("redis.lan", 6379, ["fd12::5"])
    assert policy.permitted_address("db.lan", 80, ["10.0.0.5"]) == "10.0.0.5"


@pytest.mark.parametrize("spelling", ["::ffff:127.0.0.1", "64:ff9b::7f00:1"])
def test_an_internal_endpoint_is_refused_through_ipv6_spellings(spelling: str) -> None:
    policy = EgressPolicy.parse((), allow=["::/0"], internal=["127.0.0.1:8000"])
    with pytest.raises(EgressDenied, match="own services"):
        policy.permitted_address("a", 8000, [spelling])


def test_entries_parse_in_every_documented_form() -> None:
    policy = EgressPolicy.parse(
        ["10.0.0.0/8", "192.0.2.7", "fc00::/7"],
        allow=["127.0.0.1:8080", "[::1]:9000", "172.16.0.0/12", "10.0.0.0/8:5432", "::1"],
    )
    assert [str(network) for network in policy.deny] == ["10.0.0.0/8", "192.0.2.7/32", "fc00::/7"]
    assert [(str(e.network), e.port) for e in policy.allow] == [
        ("127.0.0.1/32", 8080),
        ("::1/128", 9000),
        ("172.16.0.0/12", None),
        ("10.0.0.0/8", 5432),
        ("::1/128", None),
    ]
    assert isinstance(policy.allow[0], Endpoint)


@pytest.mark.parametrize(
    ("deny", "allow", "internal", "named"),
    [
        (["10.0.0.1/8"], [], [], "egress deny entry '10.0.0.1/8' is not valid: .*host bits set"),
        (["10.0.0.0/33"], [], [], "egress deny entry '10.0.0.0/33'"),
        (["intranet"], [], [], "egress deny entry 'intranet'"),
        (["127.0.0.1:80"], [], [], "egress deny entry '127.0.0.1:80'"),
        ([], ["127.0.0.1:0"], [], "egress allow entry '127.0.0.1:0' is not valid: port"),
        ([], ["127.0.0.1:http"], [], "egress allow entry '127.0.0.1:http'"),
        ([], ["[::1]"], [], r"egress allow entry '\[::1\]' is not valid: expected"),
        ([], [], ["db.internal:5432"], "egress internal entry 'db.internal:5432'"),
    ],
)
def test_a_bad_entry_is_refused_naming_it(
    deny: list[str], allow: list[str], internal: list[str], named: str
) -> None:
    with pytest.raises(InvalidInput, match=named):
        EgressPolicy.parse(deny, allow, internal)
