"""Where to go after sign-in: only a path on this site, never another origin."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

DEFAULT = "/"


def safe_next(value: str | None) -> str:
    """`value` if it is a same-origin absolute path, otherwise "/".

    Browsers read `//evil` and `/\\evil` as other hosts, and percent-encoding hides both
    from a naive check, so the value is decoded until it stops changing and every form is
    checked.
    """
    if not value or len(value) > 2000:
        return DEFAULT
    forms = [value]
    while len(forms) < 5:
        decoded = unquote(forms[-1])
        if decoded == forms[-1]:
            break
        forms.append(decoded)
    for form in forms:
        if not form.startswith("/") or form.startswith("//") or "\\" in form:
            return DEFAULT
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in form):
            return DEFAULT
        parts = urlsplit(form)
        if parts.scheme or parts.netloc:
            return DEFAULT
    return value
