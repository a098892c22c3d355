from __future__ import annotations

import pytest

from bastion.web.auth.redirects import safe_next


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "//evil",
        "/\\evil",
        "\\\\evil",
        "http://evil",
        "javascript:x",
        "/%2F%2Fevil",
        "/%5Cevil",
        "%2f%2fevil",
        "/%25%32%66%25%32%66evil",
        "/ok\r\nLocation: x",
        "evil",
        "/" + "a" * 2001,
    ],
)
def test_anything_but_a_local_path_becomes_the_overview(value: str | None) -> None:
    assert safe_next(value) == "/"


@pytest.mark.parametrize("value", ["/", "/runs", "/runs?status=failed&page=2", "/vault#alerts"])
def test_local_paths_are_kept(value: str) -> None:
    assert safe_next(value) == value
