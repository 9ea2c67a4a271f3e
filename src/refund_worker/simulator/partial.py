"""``fields=`` partial responses, as ``Framework/Webapi/Rest/Response/FieldsFilter.php``.

``fields=items[entity_id,increment_id,items[sku]],total_count`` keeps those keys: at each
level a list is filtered item by item, an object keeps only the named keys (unknown names are
dropped silently). A filter with a character other than letters, digits, ``_``, ``[``, ``]``
and ``,``, or with unbalanced brackets, gives an empty response (``[]``), as Magento does. The
filter is applied when the ``fields`` parameter is present and not empty. Pure.
"""

from __future__ import annotations

import re
from typing import Any

Tree = dict[str, "Tree | None"]
_ALLOWED = re.compile(r"^[\w\[\],]+$")


def parse(text: str) -> Tree | None:
    """The filter as a tree of names (``None`` for a leaf), or ``None`` when malformed."""
    if not text or not _ALLOWED.match(text):
        return None
    current: Tree = {}
    stack: list[tuple[Tree, str | None]] = []
    name: str | None = None
    start: int | None = None
    for position, char in enumerate(text + ","):
        if char in "[],":
            if start is not None:
                name = text[start:position]
                current[name] = None
            start = None
            if char == "[":
                stack.append((current, name))
                current = {}
            elif char == "]":
                if not stack:
                    return None
                parent, key = stack.pop()
                if key is not None:
                    parent[key] = current
                current = parent
        elif start is None:
            start = position
    return None if stack else current


def apply(payload: Any, tree: Tree) -> Any:
    """FieldsFilter::applyFilter: a list is filtered element by element."""
    if isinstance(payload, list):
        return [_intersect(item, tree) if isinstance(item, dict) else item for item in payload]
    if isinstance(payload, dict):
        return _intersect(payload, tree)
    return payload


def _intersect(payload: dict[str, Any], tree: Tree) -> dict[str, Any] | list[Any]:
    out: dict[str, Any] = {}
    for key, value in payload.items():
        if key not in tree:
            continue
        sub = tree[key]
        out[key] = (
            apply(value, sub) if sub is not None and isinstance(value, (dict, list)) else value
        )
    return out if out else []  # PHP's empty array is JSON []


def filter_response(payload: Any, fields: str) -> Any:
    """The partial response for ``fields`` (``[]`` when the filter is malformed)."""
    tree = parse(fields)
    if tree is None:
        return []
    return apply(payload, tree)
