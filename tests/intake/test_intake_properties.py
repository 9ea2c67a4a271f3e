"""Property-based tests of intake: whatever arrives, a bad request gets one clear error naming
the field, and nothing is stored or published for it."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from refund_worker.db import Database
from refund_worker.errors import InvalidRefund
from refund_worker.intake import MAX_REQUEST_BYTES, enqueue_refund, validate_request
from refund_worker.models import Refund
from refund_worker.schemas import RefundRequest

FIELDS = set(RefundRequest.model_fields)
AMOUNTS = ("shipping_amount", "adjustment_positive", "adjustment_negative")
PROPERTY = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


class Recorder:
    def __init__(self) -> None:
        self.published: list[str] = []

    def publish_refunds(self, refund_ids: Any) -> None:
        self.published.extend(refund_ids)


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    path: Path = tmp_path_factory.mktemp("intake") / "refunds.db"
    db = Database.from_url(f"sqlite:///{path}")
    db.prepare()
    yield db
    db.dispose()


def stored(database: Database) -> int:
    with database.session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(Refund)) or 0)


def refused(database: Database, data: Any) -> str:
    """Offer ``data`` to intake; it must be refused with nothing stored or published."""
    before = stored(database)
    publisher = Recorder()
    with pytest.raises(InvalidRefund) as caught:
        enqueue_refund(data, database=database, publisher=publisher)
    assert stored(database) == before
    assert publisher.published == []
    message = str(caught.value)
    assert message
    assert "\n" not in message
    assert "Traceback" not in message
    return message


def base(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"idempotency_key": "rma-1", "order_id": 42}
    payload.update(changes)
    return payload


def names(message: str, field: str) -> bool:
    return message.startswith(f"{field}:") or f"; {field}:" in message or f"{field}:" in message


# --------------------------------------------------------------------------- strategies

keys = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
not_int = st.one_of(st.text(max_size=5), st.floats(allow_nan=False) .filter(
    lambda f: not f.is_integer()), st.booleans(), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.none())
not_str = st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(),
                    st.lists(st.integers(), max_size=2), st.none())
not_bool = st.one_of(st.integers(min_value=2), st.text(min_size=1, max_size=5),
                     st.floats(allow_nan=False), st.lists(st.booleans(), min_size=1, max_size=2))
control = st.sampled_from([chr(c) for c in [*range(0, 9), 11, 12, *range(14, 32), 127]])


@PROPERTY
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_malformed_json_is_refused_as_the_request(database: Database, text: str | bytes) -> None:
    try:
        parsed = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        parsed = None
    assume(not isinstance(parsed, dict))
    message = refused(database, text)
    assert message.startswith("request:")


@PROPERTY
@given(field=st.sampled_from(["order_id", "invoice_id"]), value=not_int)
def test_an_id_of_the_wrong_type_names_the_field(database: Database, field: str,
                                                 value: Any) -> None:
    assume(not (field == "invoice_id" and value is None))
    assert names(refused(database, base(**{field: value})), field)


@PROPERTY
@given(field=st.sampled_from(["idempotency_key", "store_code", "comment"]), value=not_str)
def test_a_string_of_the_wrong_type_names_the_field(database: Database, field: str,
                                                    value: Any) -> None:
    assume(not (field != "idempotency_key" and value is None))
    assert names(refused(database, base(**{field: value})), field)


@PROPERTY
@given(field=st.sampled_from(["notify_customer", "comment_visible_to_customer",
                              "offline_requested"]), value=not_bool)
def test_a_flag_of_the_wrong_type_names_the_field(database: Database, field: str,
                                                  value: Any) -> None:
    assert names(refused(database, base(**{field: value})), field)


bad_amounts = st.one_of(
    st.decimals(max_value=Decimal("-0.0001"), allow_nan=False, allow_infinity=False, places=4),
    st.decimals(min_value=Decimal("1000000000.0001"), allow_nan=False, allow_infinity=False,
                places=4),
    st.sampled_from([Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"),
                     Decimal("sNaN")]),
    st.decimals(min_value=0, max_value=1000, places=7).filter(
        lambda d: d != d.quantize(Decimal("0.0001"))),
)


@PROPERTY
@given(field=st.sampled_from(AMOUNTS), amount=bad_amounts,
       form=st.sampled_from(["json number", "json string", "python"]))
def test_a_bad_amount_names_the_field(database: Database, field: str, amount: Decimal,
                                      form: str) -> None:
    if form == "python":
        data: Any = base(**{field: amount})
    elif form == "json string":
        data = json.dumps(base(**{field: str(amount)}))
    else:
        assume(not amount.is_snan())
        number = {"NaN": "NaN", "Infinity": "Infinity", "-Infinity": "-Infinity"}.get(
            str(amount), str(amount))
        data = json.dumps(base(**{field: "__AMOUNT__"})).replace('"__AMOUNT__"', number)
    assert names(refused(database, data), field)


@PROPERTY
@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True).filter(
    lambda f: math.isnan(f) or math.isinf(f) or f <= 0), bad_amounts))
def test_a_bad_quantity_names_the_item(database: Database, value: Any) -> None:
    message = refused(database, base(items=[{"order_item_id": 1, "qty": value}]))
    assert names(message, "items.0.qty")


@PROPERTY
@given(key=st.text(min_size=1, max_size=60).filter(lambda k: k not in FIELDS),
       value=st.one_of(st.integers(), st.text(max_size=10), st.none()))
def test_an_unknown_field_is_refused_by_name(database: Database, key: str, value: Any) -> None:
    message = refused(database, base(**{key: value}))
    assert "Extra inputs are not permitted" in message
    shown = key if key.isprintable() and " " not in key else json.dumps(key)
    assert message == f"{shown}: Extra inputs are not permitted"


def test_a_huge_unknown_field_name_is_cut_in_the_error(database: Database) -> None:
    message = refused(database, base(**{"x" * 100_000: 1}))
    assert message == "x" * 64 + "...: Extra inputs are not permitted"


@PROPERTY
@given(field=st.sampled_from([("idempotency_key", 255), ("comment", 2000),
                              ("store_code", 32)]), extra=st.integers(1, 5000))
def test_an_overlong_string_names_the_field(database: Database, field: tuple[str, int],
                                            extra: int) -> None:
    name, limit = field
    filler = "a" if name != "idempotency_key" else "k"
    assert names(refused(database, base(**{name: filler * (limit + extra)})), name)


@PROPERTY
@given(field=st.sampled_from(["idempotency_key", "comment", "store_code"]), char=control,
       position=st.integers(0, 5), as_json=st.booleans())
def test_a_control_character_names_the_field(database: Database, field: str, char: str,
                                             position: int, as_json: bool) -> None:
    value = "abcde"[:position] + char + "abcde"[position:]
    data: Any = json.dumps(base(**{field: value})) if as_json else base(**{field: value})
    assert names(refused(database, data), field)


@pytest.mark.parametrize("kind", ["str", "bytes"])
@pytest.mark.parametrize("extra", [1, 5000])
def test_a_request_over_one_mib_is_refused_before_parsing(database: Database, kind: str,
                                                          extra: int) -> None:
    padding = " " * (MAX_REQUEST_BYTES - len(json.dumps(base())) + extra)
    text = json.dumps(base())[:-1] + padding + "}"
    assert len(text.encode()) > MAX_REQUEST_BYTES
    data: str | bytes = text if kind == "str" else text.encode()
    message = refused(database, data)
    assert message.startswith("request:")
    assert "1 MiB" in message


def test_a_request_of_exactly_one_mib_is_parsed(database: Database) -> None:
    text = json.dumps(base(idempotency_key="one-mib"))
    text = text[:-1] + " " * (MAX_REQUEST_BYTES - len(text)) + "}"
    assert len(text.encode()) == MAX_REQUEST_BYTES
    assert validate_request(text).idempotency_key == "one-mib"


def test_multibyte_text_is_measured_in_bytes(database: Database) -> None:
    comment = "€" * 400_000  # 1.2 MB in UTF-8, 400k characters
    text = json.dumps(base(comment=comment), ensure_ascii=False)
    assert len(text) < MAX_REQUEST_BYTES < len(text.encode())
    assert "1 MiB" in refused(database, text)


@PROPERTY
@given(key=keys, order_id=st.integers(1, 2**31 - 1),
       amount=st.decimals(min_value=0, max_value=10**6, places=4))
def test_valid_requests_are_stored_once(database: Database, key: str, order_id: int,
                                        amount: Decimal) -> None:
    payload = base(idempotency_key=f"{key}-{uuid.uuid4().hex}", order_id=order_id,
                   shipping_amount=amount)
    publisher = Recorder()
    first = enqueue_refund(payload, database=database, publisher=publisher)
    before = stored(database)
    again = enqueue_refund(json.dumps(payload, default=str), database=database,
                           publisher=publisher)
    assert again.refund_id == first.refund_id
    assert stored(database) == before
    assert len(set(publisher.published)) <= 1
