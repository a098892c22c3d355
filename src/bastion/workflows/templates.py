"""Parameter templates: `{{ steps.fetch.body.id }}`, `{{ input.user }}`,
`{{ credentials.github.token }}`.

Step and input references are JMESPath over the run state. Credential references name a
credential and one of its fields; their values are fetched through the vault at run time,
for this node only, and never enter the run state, so they cannot reach checkpoints or
run history. A parameter that is exactly one template keeps the value's JSON type; a
template inside a longer string is replaced by its text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jmespath
import jmespath.exceptions
from jmespath.parser import ParsedResult

from bastion.vault.secret import Secret
from bastion.workflows.errors import InvalidGraph, NodeFailed

_TEMPLATE = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_ROOT = re.compile(r"(input|steps|credentials)\b")
_STEP = re.compile(r"steps\.([A-Za-z_][A-Za-z0-9_]*)")
_CREDENTIAL = re.compile(r"credentials\.([A-Za-z0-9_-]{1,100})\.([A-Za-z0-9_-]{1,64})")


@dataclass(frozen=True)
class Reference:
    text: str  # the whole expression, as written
    root: str  # input | steps | credentials
    name: str  # the step or credential named ("" for input)
    field: str = ""  # the credential field


def parse(expression: str) -> Reference:
    root = _ROOT.match(expression)
    if root is None:
        raise InvalidGraph(
            f"template {{{{ {expression[:100]} }}}} must start with input., steps. or credentials."
        )
    if root.group(1) == "credentials":
        credential = _CREDENTIAL.fullmatch(expression)
        if credential is None:
            raise InvalidGraph(
                f"template {{{{ {expression[:100]} }}}}: write credentials.<name>.<field>"
            )
        return Reference(expression, "credentials", credential.group(1), credential.group(2))
    try:
        jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as exc:
        raise InvalidGraph(f"template {{{{ {expression[:100]} }}}}: {exc}") from None
    if root.group(1) == "steps":
        step = _STEP.match(expression)
        if step is None:
            raise InvalidGraph(f"template {{{{ {expression[:100]} }}}}: write steps.<node id>…")
        return Reference(expression, "steps", step.group(1))
    return Reference(expression, "input", "")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def references(params: Any) -> Iterator[Reference]:
    for text in _strings(params):
        for match in _TEMPLATE.finditer(text):
            yield parse(match.group(1))


def credential_names(params: Any) -> set[str]:
    return {ref.name for ref in references(params) if ref.root == "credentials"}


Lookup = Callable[[Reference], Any]


def render(params: Any, lookup: Lookup) -> Any:
    """`params` with every template replaced by what `lookup` finds for it."""
    if isinstance(params, str):
        whole = _TEMPLATE.fullmatch(params)
        if whole is not None:
            return lookup(parse(whole.group(1)))
        return _TEMPLATE.sub(lambda m: _text(lookup(parse(m.group(1)))), params)
    if isinstance(params, Mapping):
        return {key: render(value, lookup) for key, value in params.items()}
    if isinstance(params, list):
        return [render(item, lookup) for item in params]
    return params


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def evaluate(expression: str | ParsedResult, state: Mapping[str, Any]) -> Any:
    """JMESPath over the run's input and step outputs.

    An expression that fails on the data (text compared with a number) fails the node or
    branch that asked, with the cause; it is not an engine error.
    """
    compiled = jmespath.compile(expression) if isinstance(expression, str) else expression
    try:
        return compiled.search({"input": state["input"], "steps": state["steps"]})
    except (jmespath.exceptions.JMESPathError, TypeError, ValueError) as exc:
        raise NodeFailed(f"expression failed: {exc}") from None


def state_lookup(
    state: Mapping[str, Any], credentials: Mapping[str, Mapping[str, Secret]]
) -> Lookup:
    """Looks references up in the run state and in credentials already fetched for a node."""

    def lookup(reference: Reference) -> Any:
        if reference.root == "credentials":
            fields = credentials.get(reference.name)
            if fields is None:
                raise NodeFailed(f"credential {reference.name!r} was not fetched")
            secret = fields.get(reference.field)
            if secret is None:
                raise NodeFailed(f"credential {reference.name!r} has no field {reference.field!r}")
            return secret.reveal()
        if reference.root == "steps" and reference.name not in state["steps"]:
            raise NodeFailed(
                f"{reference.text!r} references step {reference.name!r}, which has not run"
            )
        return evaluate(reference.text, state)

    return lookup
