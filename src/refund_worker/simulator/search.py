"""Magento's ``searchCriteria`` query syntax and its MySQL-like evaluation (docs/magento.md §7).

``searchCriteria[filter_groups][0][filters][0][field]=order_id`` style keys, camelCase or
snake_case; filter groups are AND-ed, the filters inside a group OR-ed. Conditions: eq, neq,
like, nlike, in, nin (comma-separated), gt, gteq, moreq, lt, lteq, from (>=), to (<=), null,
notnull, finset, seq, sneq. Comparisons follow MySQL: NULL never equals anything, strings compare
case-insensitively, date-time columns compare as ``YYYY-MM-DD HH:MM:SS``.

Paging copies a Magento quirk: a ``currentPage`` past the last page returns the last page
again (``Collection::getCurPage``), so a client that pages until it gets an empty page loops.

Pure: rows in, rows out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import MagentoError, not_supported, required
from .inputs import upper_camel

_CRITERIA_KEYS = {
    "FilterGroups": "filter_groups",
    "SortOrders": "sort_orders",
    "PageSize": "page_size",
    "CurrentPage": "current_page",
}
_FILTER_KEYS = {"Field": "field", "Value": "value", "ConditionType": "condition_type"}
_SORT_KEYS = {"Field": "field", "Direction": "direction"}
_DATE_COLUMNS = frozenset({"created_at", "updated_at"})
_ISO = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2})?))?")


@dataclass(frozen=True, slots=True)
class Filter:
    field: str
    value: str
    condition_type: str = "eq"


@dataclass(frozen=True, slots=True)
class SortOrder:
    field: str
    direction: str = "ASC"


@dataclass(slots=True)
class SearchCriteria:
    filter_groups: list[list[Filter]] = field(default_factory=list)
    sort_orders: list[SortOrder] = field(default_factory=list)
    page_size: int | None = None
    current_page: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``search_criteria`` echo of a search result."""
        out: dict[str, Any] = {
            "filter_groups": [
                {
                    "filters": [
                        {"field": f.field, "value": f.value, "condition_type": f.condition_type}
                        for f in group
                    ]
                }
                for group in self.filter_groups
            ]
        }
        if self.sort_orders:
            out["sort_orders"] = [
                {"field": s.field, "direction": s.direction} for s in self.sort_orders
            ]
        if self.page_size is not None:
            out["page_size"] = self.page_size
        if self.current_page is not None:
            out["current_page"] = self.current_page
        return out


def _nest(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """``a[b][0][c]=v`` pairs -> nested dicts (list indexes stay string keys)."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        parts = [head] + (re.findall(r"([^\[\]]*)\]", "[" + rest) if rest else [])
        node = root
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return root


def _ordered(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [
            node[key]
            for key in sorted(
                node, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k)
            )
        ]
    return [node] if node is not None else []


def _normalize(node: Any, names: Mapping[str, str]) -> dict[str, Any]:
    if not isinstance(node, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in node.items():
        name = names.get(upper_camel(key))
        if name is None:
            raise not_supported(upper_camel(key))
        out[name] = value
    return out


def _int_param(value: Any, name: str) -> int:
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+(\.\d*)?\s*", value):
        return int(float(value))
    raise MagentoError(
        400,
        f'Error occurred during "{name}" processing. The "{value}" value\'s type is invalid. '
        'The "int" type was expected. Verify and try again.',
    )


def _php_empty(value: Any) -> bool:
    return value is None or value in ("", "0") or isinstance(value, dict)


def parse(pairs: Iterable[tuple[str, str]], *, required_param: bool = True) -> SearchCriteria:
    """Parse query pairs into :class:`SearchCriteria`.

    Without any ``searchCriteria`` parameter Magento answers ``"%fieldName" is required``;
    an empty filter field or value (PHP-empty, so ``"0"`` too) is
    ``Invalid search filter: %1 cannot be empty.``.
    """
    nested = _nest(pairs)
    raw = nested.get("searchCriteria", nested.get("search_criteria"))
    if raw is None:
        if required_param:
            raise required("searchCriteria")
        raw = {}
    criteria = SearchCriteria()
    top = _normalize(raw, _CRITERIA_KEYS)
    for group_node in _ordered(top.get("filter_groups")):
        group_fields = _normalize(group_node, {"Filters": "filters"})
        group: list[Filter] = []
        for filter_node in _ordered(group_fields.get("filters")):
            values = _normalize(filter_node, _FILTER_KEYS)
            for name in ("field", "value"):
                if _php_empty(values.get(name)):
                    raise MagentoError(400, "Invalid search filter: %1 cannot be empty.", [name])
            condition = str(values.get("condition_type") or "eq").lower()
            group.append(Filter(str(values["field"]), str(values["value"]), condition))
        criteria.filter_groups.append(group)
    for sort_node in _ordered(top.get("sort_orders")):
        values = _normalize(sort_node, _SORT_KEYS)
        if values.get("field"):
            direction = str(values.get("direction") or "ASC").upper()
            criteria.sort_orders.append(SortOrder(str(values["field"]), direction))
    if top.get("page_size") not in (None, ""):
        criteria.page_size = _int_param(top["page_size"], "page_size")
    if top.get("current_page") not in (None, ""):
        criteria.current_page = _int_param(top["current_page"], "current_page")
    return criteria


def _unknown_column(name: str, clause: str) -> MagentoError:
    return MagentoError(
        400,
        f"SQLSTATE[42S22]: Column not found: 1054 Unknown column 'main_table.{name}' in '{clause}'",
    )


def _date_value(value: str) -> str:
    match = _ISO.match(value.strip())
    if not match:
        return value
    time = match.group(2) or "00:00:00"
    if len(time) == 5:
        time += ":00"
    return f"{match.group(1)} {time}"


def _to_number(value: Any) -> float:
    match = re.match(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", str(value))
    return float(match.group()) if match else 0.0


def _comparable(column: str, row_value: Any, filter_value: str) -> tuple[Any, Any]:
    if isinstance(row_value, bool):
        row_value = int(row_value)
    if isinstance(row_value, (int, float)):
        return float(row_value), _to_number(filter_value)
    if column in _DATE_COLUMNS:
        return str(row_value), _date_value(filter_value)
    return str(row_value).lower(), filter_value.lower()


def _like(pattern: str) -> re.Pattern[str]:
    out = []
    escaped = False
    for char in pattern:
        if escaped:
            out.append(re.escape(char))
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "%":
            out.append(".*")
        elif char == "_":
            out.append(".")
        else:
            out.append(re.escape(char))
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: bool(a == b),
    "seq": lambda a, b: bool(a == b),
    "neq": lambda a, b: bool(a != b),
    "sneq": lambda a, b: bool(a != b),
    "gt": lambda a, b: bool(a > b),
    "lt": lambda a, b: bool(a < b),
    "gteq": lambda a, b: bool(a >= b),
    "moreq": lambda a, b: bool(a >= b),
    "from": lambda a, b: bool(a >= b),
    "lteq": lambda a, b: bool(a <= b),
    "to": lambda a, b: bool(a <= b),
}


def matches(row: Mapping[str, Any], condition: Filter) -> bool:
    """One filter against one row, with SQL NULL semantics."""
    value = row.get(condition.field)
    kind = condition.condition_type
    if kind == "null":
        return value is None
    if kind == "notnull":
        return value is not None
    if value is None:
        return False
    if kind in ("like", "nlike"):
        found = _like(condition.value).fullmatch(str(value)) is not None
        return found if kind == "like" else not found
    if kind in ("in", "nin"):
        options = [part.strip() for part in condition.value.split(",")]
        found = any(a == b for a, b in (_comparable(condition.field, value, o) for o in options))
        return found if kind == "in" else not found
    if kind == "finset":
        return condition.value.lower() in [part.lower() for part in str(value).split(",")]
    compare = _COMPARISONS.get(kind)
    if compare is None:
        raise MagentoError(400, f'Condition type "{kind}" is not supported.')
    left, right = _comparable(condition.field, value, condition.value)
    return compare(left, right)


def _sort_key(column: str, value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, (int, float)):
        return (1, float(value))
    return (2, str(value).lower()) if column not in _DATE_COLUMNS else (2, str(value))


def apply(
    rows: Sequence[Mapping[str, Any]], criteria: SearchCriteria, columns: frozenset[str]
) -> tuple[list[int], int]:
    """Filter, sort and page ``rows`` (column dicts); returns (indexes of the page, total)."""
    for group in criteria.filter_groups:
        for condition in group:
            if condition.field not in columns:
                raise _unknown_column(condition.field, "where clause")
    for order in criteria.sort_orders:
        if order.field not in columns:
            raise _unknown_column(order.field, "order clause")
    selected = [
        index
        for index, row in enumerate(rows)
        if all(any(matches(row, c) for c in group) for group in criteria.filter_groups if group)
    ]
    for order in reversed(criteria.sort_orders):
        selected.sort(
            key=lambda i, f=order.field: _sort_key(f, rows[i].get(f)),  # type: ignore[misc]
            reverse=order.direction == "DESC",
        )
    total = len(selected)
    size = criteria.page_size or 0
    if size <= 0:
        return selected, total
    last_page = max((total + size - 1) // size, 1)
    page = min(max(criteria.current_page or 1, 1), last_page)
    start = (page - 1) * size
    return selected[start : start + size], total
