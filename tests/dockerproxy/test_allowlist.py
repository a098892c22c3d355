from __future__ import annotations

import pytest

from bastion.dockerproxy.allowlist import Allowlist
from bastion.dockerproxy.errors import NotAllowlisted

allowlist = Allowlist(["web1", "web2"])


def check(method: str, path: str, query: str = "") -> str:
    forward = allowlist.check(method, path.encode(), query.encode())
    return forward.target


@pytest.mark.parametrize(
    ("method", "path", "query"),
    [
        ("GET", "/_ping", ""),
        ("HEAD", "/_ping", ""),
        ("GET", "/v1.43/_ping", ""),
        ("GET", "/version", ""),
        ("GET", "/v1.51/version", ""),
        ("GET", "/containers/json", "all=1"),
        ("GET", "/containers/json", 'filters={"name":["web1"]}'),
        ("GET", "/containers/web1/json", ""),
        ("GET", "/v1.43/containers/web1/json", "size=false"),
        ("GET", "/containers/web2/stats", "stream=false"),
        ("GET", "/containers/web2/stats", "stream=0&one-shot=true"),
        ("POST", "/containers/web1/start", ""),
        ("POST", "/containers/web1/stop", "t=5"),
        ("POST", "/containers/web1/stop", "signal=SIGTERM&t=-1"),
        ("POST", "/v1.24/containers/web1/restart", "t=1"),
        ("POST", "/containers/web1/kill", "signal=SIGKILL"),
        ("POST", "/containers/web1/wait", "condition=not-running"),
    ],
)
def test_allowlisted_requests_are_forwarded(method: str, path: str, query: str) -> None:
    forward = allowlist.check(method, path.encode(), query.encode())
    assert forward.path == path


def test_the_forwarded_target_is_the_checked_path_and_a_reencoded_query() -> None:
    assert check("GET", "/containers/web1/json") == "/containers/web1/json"
    assert check("GET", "/containers/json", "all=1&size=0") == "/containers/json?all=1&size=0"
    assert (
        check("GET", "/containers/json", "filters=%7B%22name%22%3A%5B%22web1%22%5D%7D")
        == "/containers/json?filters=%7B%22name%22%3A%5B%22web1%22%5D%7D"
    )


def test_docker_sees_the_query_exactly_as_checked() -> None:
    # Decoded once, checked, encoded again: no second decoding can turn it into another value.
    assert check("GET", "/containers/web1/stats", "stream=fals%65") == (
        "/containers/web1/stats?stream=false"
    )
    assert check("GET", "/containers/json", "filters=%2525") == "/containers/json?filters=%2525"


def test_the_matched_container_is_reported() -> None:
    assert allowlist.check("POST", b"/containers/web2/kill", b"").container == "web2"
    assert allowlist.check("GET", b"/_ping", b"").container is None


@pytest.mark.parametrize(
    "path",
    [
        # Anchored at the end: a matching prefix followed by a traversal is not a match.
        "/containers/web1/json/../../images/json",
        "/containers/web1/json/../../../images/json",
        "/containers/web1/./json",
        "/containers/../containers/web1/json",
        # Anchored at the start.
        "/x/containers/web1/json",
        "//containers/web1/json",
        "/v1.43/v1.43/containers/web1/json",
        "/vx/containers/web1/json",
        # A longer name that starts with an allowed one is another container.
        "/containers/web1x/json",
        "/containers/xweb1/json",
        "/containers/web/json",
        # Encoded slashes and dots: never decoded, never matched.
        "/containers/web1%2Fjson",
        "/containers/web1%2fjson",
        "/containers/web1/json%2F..%2F..%2Fimages",
        "/containers/%2e%2e/json",
        "/containers/web%31/json",
        # Trailing slashes and empty segments.
        "/containers/web1/json/",
        "/_ping/",
        "/containers/json/",
        "/containers//json",
        # A query-string separator smuggled into the path.
        "/containers/web1/json%3F",
        "/containers/web1/json;x",
        # Other endpoints entirely.
        "/containers/create",
        "/containers/web1/exec",
        "/containers/web1/attach",
        "/containers/web1/logs",
        "/containers/web1/archive",
        "/containers/web1",
        "/images/json",
        "/volumes",
        "/networks",
        "/info",
        "/events",
        "/exec/abc/start",
        "/build",
        "/swarm",
        "/healthz",
        "/",
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_every_other_path_is_refused(method: str, path: str) -> None:
    with pytest.raises(NotAllowlisted):
        allowlist.check(method, path.encode(), b"")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/containers/web1/json"),
        ("DELETE", "/containers/web1/json"),
        ("GET", "/containers/web1/start"),
        ("PUT", "/containers/web1/start"),
        ("DELETE", "/containers/web1/kill"),
        ("POST", "/_ping"),
        ("POST", "/version"),
        ("POST", "/containers/json"),
        ("HEAD", "/containers/web1/json"),
        ("get", "/containers/web1/json"),
    ],
)
def test_a_path_with_the_wrong_method_is_refused(method: str, path: str) -> None:
    with pytest.raises(NotAllowlisted, match="not allowed on"):
        allowlist.check(method, path.encode(), b"")


def test_a_container_outside_the_allowlist_is_refused_by_name() -> None:
    with pytest.raises(NotAllowlisted, match="'db' is not in the docker proxy's allowlist"):
        allowlist.check("POST", b"/containers/db/stop", b"")
    with pytest.raises(NotAllowlisted):
        allowlist.check("GET", b"/v1.43/containers/db/json", b"")


@pytest.mark.parametrize(
    ("path", "query", "why"),
    [
        # Streaming stats would hold the connection open for ever.
        ("/containers/web1/stats", "", "stream is required"),
        ("/containers/web1/stats", "stream=true", "value of 'stream'"),
        ("/containers/web1/stats", "stream=1", "value of 'stream'"),
        ("/containers/web1/stats", "stream=false&stream=true", "repeated"),
        # Unknown parameters, such as a checkpoint directory, are refused.
        ("/containers/web1/start", "checkpoint=c1&checkpoint-dir=/etc", "'checkpoint'"),
        ("/containers/web1/json", "size=1&x=1", "'x'"),
        ("/_ping", "a=b", "'a'"),
        ("/containers/web1/stop", "t=ten", "value of 't'"),
        ("/containers/web1/kill", "signal=KILL;rm", "value of 'signal'"),
        ("/containers/web1/wait", "condition=whatever", "value of 'condition'"),
        ("/containers/json", "before=secret", "'before'"),
        ("/containers/json", "all", "malformed"),
    ],
)
def test_query_strings_are_checked_parameter_by_parameter(path: str, query: str, why: str) -> None:
    method = "GET" if path.endswith(("stats", "json", "_ping")) else "POST"
    with pytest.raises(NotAllowlisted, match=why):
        allowlist.check(method, path.encode(), query.encode())


def test_a_non_ascii_target_is_refused() -> None:
    with pytest.raises(NotAllowlisted, match="not ASCII"):
        allowlist.check("GET", "/containers/wéb1/json".encode(), b"")


def test_only_allowlisted_names_are_kept_from_a_container_entry() -> None:
    assert allowlist.keep(["/web1", "/other/web1", "/db"]) == ["/web1"]
    assert allowlist.keep(["/db"]) == []
    assert allowlist.keep(["/web1x"]) == []
