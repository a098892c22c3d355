"""The built-in node types, by name."""

from __future__ import annotations

from bastion.workflows.nodes.base import NodeType
from bastion.workflows.nodes.basic import CONDITION, DELAY, FAIL, SET, TRANSFORM
from bastion.workflows.nodes.code import CODE
from bastion.workflows.nodes.http_request import HTTP_REQUEST
from bastion.workflows.nodes.sub_workflow import SUB_WORKFLOW

NODE_TYPES: dict[str, NodeType] = {
    kind.name: kind
    for kind in (SET, TRANSFORM, CONDITION, DELAY, FAIL, CODE, HTTP_REQUEST, SUB_WORKFLOW)
}
