"""Routing is pure: the request and what Magento said about the order decide the call."""

from __future__ import annotations

from typing import Any

import pytest

from refund_worker.errors import InvalidRefund
from refund_worker.routing import plan_refund
from refund_worker.schemas import RefundRequest, Service
from tests.magento_schema import body_errors

MARKER = "refund-worker:abc"


def order(method: str, **extra: Any) -> dict[str, Any]:
    return {
        "entity_id": 10,
        "payment": {"method": method},
        "base_shipping_amount": 5,
        "base_shipping_refunded": 0,
        "items": [
            {"item_id": 1, "sku": "TEE", "price": 20, "base_price": 20, "qty_invoiced": 2,
             "qty_refunded": 0, "is_qty_decimal": 0},
            {"item_id": 2, "sku": "RICE", "price": 3, "base_price": 3, "qty_invoiced": 2.5,
             "qty_refunded": 0, "is_qty_decimal": 1},
        ],
        **extra,
    }


def invoice(invoice_id: int = 7, transaction_id: str | None = "txn-1") -> dict[str, Any]:
    return {"entity_id": invoice_id, "order_id": 10, "transaction_id": transaction_id,
            "items": [{"order_item_id": 1, "qty": 2}, {"order_item_id": 2, "qty": 2.5}]}


def request(**fields: Any) -> RefundRequest:
    return RefundRequest.model_validate({"idempotency_key": "k", "order_id": 10, **fields})


def plan(req: RefundRequest, method: str = "braintree",
         invoices: list[dict[str, Any]] | None = None) -> Any:
    call = plan_refund(req, marker=MARKER, order=order(method),
                       invoices=[invoice()] if invoices is None else invoices)
    operation = {Service.INVOICE: "invoice_refund", Service.ORDER: "order_refund",
                 Service.CREDITMEMO: "creditmemo_refund",
                 Service.RECORD_ONLY: "creditmemo_save"}[call.service]
    assert body_errors(operation, call.body) == [], call.body
    return call


def test_online_invoice_goes_to_refund_invoice_online() -> None:
    call = plan(request())
    assert call.service is Service.INVOICE
    assert call.target_id == 7
    assert call.body["isOnline"] is True
    assert call.body["notify"] is False
    assert "items" not in call.body  # everything still refundable, Magento's default
    assert "arguments" not in call.body  # shipping included by Magento's default


@pytest.mark.parametrize("method", ["checkmo", "banktransfer", "cashondelivery",
                                    "purchaseorder", "free"])
def test_offline_paid_invoice_goes_to_refund_order(method: str) -> None:
    call = plan(request(invoice_id=7), method=method)
    assert call.service is Service.ORDER
    assert call.target_id == 10
    assert "isOnline" not in call.body


def test_online_order_without_invoice_goes_to_refund_order() -> None:
    assert plan(request(), invoices=[]).service is Service.ORDER


def test_several_invoices_need_an_invoice_id() -> None:
    with pytest.raises(InvalidRefund, match="invoice_id"):
        plan(request(), invoices=[invoice(7), invoice(8)])
    assert plan(request(invoice_id=8), invoices=[invoice(7), invoice(8)]).target_id == 8


def test_invoice_of_another_order_is_refused() -> None:
    with pytest.raises(InvalidRefund, match="does not belong"):
        plan(request(invoice_id=7), invoices=[{**invoice(7), "order_id": 99}])


def test_unknown_method_without_transaction_is_refused_not_guessed() -> None:
    with pytest.raises(InvalidRefund, match="cannot tell"):
        plan(request(), method="my_gateway", invoices=[invoice(transaction_id=None)])
    assert plan(request(), method="my_gateway").service is Service.INVOICE


def test_extra_offline_methods_from_settings() -> None:
    call = plan_refund(request(), marker=MARKER, order=order("my_cash"), invoices=[invoice()],
                       extra_offline=frozenset({"my_cash"}))
    assert call.service is Service.ORDER


def test_partial_refund_sends_zero_shipping_and_stock_items() -> None:
    call = plan(request(items=[{"order_item_id": 1, "qty": 1}], return_to_stock=True))
    assert call.body["items"] == [{"order_item_id": 1, "qty": 1}]
    assert call.body["arguments"]["shipping_amount"] == 0
    assert call.body["arguments"]["extension_attributes"] == {"return_to_stock_items": [1]}


def test_explicit_zero_shipping_and_adjustments_are_sent() -> None:
    call = plan(request(shipping_amount=0, adjustment_positive="1.5", adjustment_negative=2))
    assert call.body["arguments"] == {"shipping_amount": 0, "adjustment_positive": 1.5,
                                      "adjustment_negative": 2}


def test_fractional_qty_refused_for_whole_items_only() -> None:
    with pytest.raises(InvalidRefund, match="whole number"):
        plan(request(items=[{"order_item_id": 1, "qty": "0.5"}]))
    call = plan(request(items=[{"order_item_id": 2, "qty": "0.5"}]))
    assert call.body["items"] == [{"order_item_id": 2, "qty": 0.5}]


def test_marker_is_in_every_comment_and_hidden_by_default() -> None:
    call = plan(request(comment="Damaged in transit"))
    assert call.body["comment"] == {"comment": f"Damaged in transit [{MARKER}]",
                                    "is_visible_on_front": 0}
    visible = plan(request(comment_visible_to_customer=True))
    assert visible.body["comment"]["is_visible_on_front"] == 1


def test_explicit_services_are_honoured() -> None:
    assert plan(request(service="order")).service is Service.ORDER
    invoice_call = plan(request(service="invoice"), method="checkmo")
    assert invoice_call.service is Service.INVOICE
    assert invoice_call.body["isOnline"] is False  # Magento will say it cannot, in its words


def test_creditmemo_service_sends_the_callers_document() -> None:
    req = request(service="creditmemo", offline_requested=True, creditmemo={
        "items": [{"order_item_id": 1, "qty": 1, "price": 20, "base_price": 20,
                   "row_total": 20, "base_row_total": 20}],
        "subtotal": 20, "base_subtotal": 20, "grand_total": 20, "base_grand_total": 20,
    })
    call = plan(req)
    assert call.service is Service.CREDITMEMO
    assert call.body["offlineRequested"] is True
    memo = call.body["creditmemo"]
    assert memo["order_id"] == 10
    assert memo["base_grand_total"] == 20
    assert MARKER in memo["comments"][0]["comment"]


def test_record_only_computes_a_document_and_moves_no_money() -> None:
    call = plan(request(service="record_only", items=[{"order_item_id": 1, "qty": 2}]))
    assert call.service is Service.RECORD_ONLY
    entity = call.body["entity"]
    assert entity["base_grand_total"] == 40  # 2 x 20, no shipping on a partial
    assert entity["items"][0]["row_total"] == 40
    assert MARKER in entity["comments"][0]["comment"]


def test_record_only_full_includes_remaining_shipping() -> None:
    entity = plan(request(service="record_only")).body["entity"]
    assert entity["base_grand_total"] == 20 * 2 + 3 * 2.5 + 5


def _exported_memo() -> dict[str, Any]:
    """Credit memo 201 as GET /V1/creditmemo/201 returns it (the library's partly refunded
    order), without its comments: a whole sales-data-creditmemo-interface."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "data/orders/partly-refunded-checkmo.json"
    memo: dict[str, Any] = json.loads(path.read_text())["creditmemos"][0]
    memo.pop("comments")
    return memo


def test_a_whole_credit_memo_document_is_accepted_and_what_magento_assigns_is_not_sent() -> None:
    memo = _exported_memo()
    assert {"entity_id", "increment_id", "created_at", "state", "order_id"} <= set(memo)
    req = request(order_id=memo["order_id"], service="creditmemo", creditmemo=memo)
    call = plan_refund(req, marker=MARKER, order={}, invoices=[])
    sent = call.body["creditmemo"]
    assert body_errors("creditmemo_refund", call.body) == []
    for assigned in ("entity_id", "increment_id", "created_at", "updated_at", "state",
                     "creditmemo_status", "email_sent", "store_id", "transaction_id"):
        assert assigned not in sent, assigned
    assert sent["order_id"] == memo["order_id"]
    assert sent["grand_total"] == memo["grand_total"]
    assert sent["base_currency_code"] == memo["base_currency_code"]
    assert [c["comment"] for c in sent["comments"]] == [f"[{MARKER}]"]  # only the worker's
    for line, given in zip(sent["items"], memo["items"], strict=True):
        assert line["entity_id"] == 0  # the schema requires one; Magento assigns it
        assert "parent_id" not in line
        assert line["row_total"] == given["row_total"]


def test_a_credit_memo_document_refuses_unknown_fields_comments_and_another_order() -> None:
    memo = _exported_memo()
    with pytest.raises(ValueError, match=r"creditmemo\.surprise"):
        request(order_id=memo["order_id"], service="creditmemo", creditmemo={**memo,
                                                                              "surprise": 1})
    with pytest.raises(ValueError, match=r"creditmemo\.items\.0\.surprise"):
        request(order_id=memo["order_id"], service="creditmemo", creditmemo={
            **memo, "items": [{**memo["items"][0], "surprise": 1}]})
    with pytest.raises(ValueError, match="put the text in the request's comment field"):
        request(order_id=memo["order_id"], service="creditmemo",
                creditmemo={**memo, "comments": [{"comment": "x"}]})
    with pytest.raises(ValueError, match=r"creditmemo\.order_id: 111 is not the request's "):
        request(order_id=5, service="creditmemo", creditmemo=memo)
    # By increment id, the document's order is checked once the worker has resolved it.
    by_number = RefundRequest.model_validate({"idempotency_key": "k", "service": "creditmemo",
                                              "order_increment_id": "000000005",
                                              "creditmemo": memo})
    with pytest.raises(InvalidRefund, match=r"creditmemo\.order_id: 111 is not the request's "
                                            "order 5"):
        plan_refund(by_number.for_order(5), marker=MARKER, order={}, invoices=[])
    assert plan_refund(by_number.for_order(111), marker=MARKER, order={},
                       invoices=[]).body["creditmemo"]["order_id"] == 111
