"""The simulator's in-memory Magento: entities, ids, per-order locks and the services.

Every refund of an order runs under that order's lock, like Magento's ``SELECT ... FOR UPDATE``
in ``OrderMutex``: build, validate, update the order and store the credit memo (with its items
and comment) as one step, so a credit memo exists if and only if its totals were applied.
All methods are thread-safe; the HTTP layer calls them from the event loop and tests may call
them from any thread.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any

from . import build, imports, interfaces, orderspec, rules, search, seeds, totals
from .auth import AuthRegistry, OAuthCredentials
from .entities import CREDITMEMO_STATE_OPEN, CREDITMEMO_STATE_REFUNDED, Creditmemo, Invoice, Order
from .errors import MagentoError, document_validation, entity_not_found, id_needed
from .faults import FaultEngine
from .fields import CREDITMEMO_COLUMNS, REFUND_ORDER
from .inputs import convert_params
from .orderspec import SpecError
from .totals import InvoiceRefunds

DEFAULT_STORE_CODES = frozenset({"default", "all"})
_KEEP = object()
# What a caller-built credit memo takes from its order when it does not say (Convert\Order).
_ORDER_TO_MEMO = [
    "base_currency_code",
    "global_currency_code",
    "order_currency_code",
    "store_currency_code",
    "base_to_global_rate",
    "base_to_order_rate",
    "store_to_base_rate",
    "store_to_order_rate",
    "billing_address_id",
]


def _bump_increment(ids: _Ids, table: str, increment_id: Any) -> None:
    """Keep new increment ids past an imported numeric one (``000000123``)."""
    if isinstance(increment_id, str) and increment_id.isdigit():
        ids.bump(table, int(increment_id))


@dataclass(slots=True)
class SimulatorConfig:
    """Switches for behaviours that differ between Magento installations."""

    emails_enabled: bool = True  # sales_email/creditmemo/enabled (and async sending off)
    id_as_string: bool = False  # RefundOrder/RefundInvoice return "123" instead of 123
    admin_token_lifetime_s: float = 3600.0  # webapi/jwtauth/admin_expiration

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Ids:
    """Auto-increment counters, one per table."""

    def __init__(self) -> None:
        self.values: Counter[str] = Counter()

    def next(self, table: str, count: int = 1) -> int:
        first = self.values[table] + 1
        self.values[table] += count
        return first

    def bump(self, table: str, used: int) -> None:
        self.values[table] = max(self.values[table], used)


class SimulatorState:
    """A thread-safe in-memory Magento store plus the simulator's control state."""

    def __init__(
        self,
        seed: str | None = None,
        tokens: Mapping[str, Iterable[str] | None] | None = None,
        admin_users: Mapping[str, str] | None = None,
        oauth_credentials: Iterable[OAuthCredentials] | None = None,
        store_codes: Iterable[str] | None = None,
        *,
        clock: Any = time.time,
        fault_seed: int | None = None,
        request_log_size: int = 10_000,
        import_files: Iterable[str] = (),
    ) -> None:
        self.seed = seed
        # Orders from --import files: loaded after the seed, again on every reset.
        self._imported = [doc for path in import_files for doc in seeds.order_specs(path)]
        self.store_codes = DEFAULT_STORE_CODES | frozenset(store_codes or ())
        self.clock = clock
        self.auth = AuthRegistry(tokens, admin_users, oauth_credentials, clock=clock)
        self.faults = FaultEngine(fault_seed)
        self.config = SimulatorConfig()
        self._log: deque[tuple[float, str, str, str, int, float, str | None]] = deque(
            maxlen=request_log_size
        )
        self._bodies: deque[tuple[float, str, str, str, bytes]] = deque(maxlen=request_log_size)
        self._stats: Counter[tuple[str, int]] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.RLock()
        self._now_cache: tuple[int, str] = (-1, "")
        self._clear()
        self._load_seed(seed)

    # ------------------------------------------------------------------ lifecycle

    def _clear(self) -> None:
        with self._lock:
            self._orders: dict[int, Order] = {}
            self._order_items: dict[int, int] = {}  # item id -> order id
            self._invoices: dict[int, Invoice] = {}
            self._creditmemos: dict[int, Creditmemo] = {}
            self._invoice_refunds: dict[int, InvoiceRefunds] = {}
            self._online_refunds: Counter[int] = Counter()
            self._stock: dict[tuple[int, str], float] = {}
            self._order_locks: dict[int, threading.Lock] = {}
            self._outbox: list[dict[str, Any]] = []
            self._ids = _Ids()

    def _load_seed(self, seed: str | None, specs: list[dict[str, Any]] | None = None) -> None:
        for spec in seeds.order_specs(seed) if specs is None else specs:
            self.add_order(spec)
        for document in self._imported:
            self.add_order(document)

    def reset(self, seed: Any = _KEEP) -> None:
        """Back to the seed (and imports): entities, outbox, faults, log, stats, tokens, config."""
        specs = seeds.order_specs(self.seed if seed is _KEEP else seed)
        if seed is not _KEEP:
            self.seed = seed
        self._clear()
        self.faults.clear()
        self.auth.reset()
        self.config = SimulatorConfig()
        self.auth.admin_token_lifetime_s = self.config.admin_token_lifetime_s
        self._log.clear()
        self._bodies.clear()
        self._stats.clear()
        self.max_in_flight = self.in_flight
        self._load_seed(self.seed, specs)

    def configure(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change config switches; raises ``SpecError`` for an unknown key or a wrong type."""
        known = {f.name: f for f in fields(SimulatorConfig)}
        for key, value in changes.items():
            if key not in known:
                raise SpecError(f"unknown config key {key!r}; known: {sorted(known)}")
            if key == "admin_token_lifetime_s":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                    raise SpecError("admin_token_lifetime_s must be a positive number")
            elif not isinstance(value, bool):
                raise SpecError(f"{key} must be true or false")
        with self._lock:
            for key, value in changes.items():
                setattr(self.config, key, value)
            self.auth.admin_token_lifetime_s = float(self.config.admin_token_lifetime_s)
            return self.config.to_dict()

    def now(self) -> str:
        """Magento's UTC ``YYYY-MM-DD HH:MM:SS``."""
        second = int(self.clock())
        cached = self._now_cache
        if cached[0] != second:
            text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second))
            cached = self._now_cache = (second, text)
        return cached[1]

    @contextmanager
    def _order_lock(self, order_id: int) -> Iterator[None]:
        with self._lock:
            lock = self._order_locks.setdefault(order_id, threading.Lock())
        with lock:
            yield

    # ------------------------------------------------------------------ orders

    def add_order(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Create an order from a compact spec (``orderspec``) or an import (``imports``)."""
        if imports.is_import(spec):
            return self.import_order(spec)
        parsed = orderspec.parse(spec)
        created = parsed.created_at or self.now()
        with self._lock:
            if parsed.entity_id is not None and parsed.entity_id in self._orders:
                raise SpecError(f"order {parsed.entity_id} already exists")
            ids = self._ids
            order_id = parsed.entity_id or ids.next("order")
            ids.bump("order", order_id)
            first_address = ids.next("order_address", 2)
            built = build.Ids(
                order_id=order_id,
                increment_id=parsed.increment_id or f"{ids.next('order_increment'):09d}",
                first_item_id=ids.next("order_item", len(parsed.items)),
                billing_address_id=first_address,
                shipping_address_id=first_address + 1,
            )
            order = build.build_order(parsed, built, created)
            invoice = None
            if parsed.invoiced:
                invoice = build.build_invoice(
                    order,
                    invoice_id=ids.next("invoice"),
                    increment_id=f"{ids.next('invoice_increment'):09d}",
                    first_item_id=ids.next(
                        "invoice_item", sum(1 for i in order.items if i.qty_invoiced > 0)
                    ),
                    created=created,
                )
                self._invoices[invoice.entity_id] = invoice
            self._store_order(order)
        for index, body in enumerate(parsed.refunds):
            try:
                self.refund_order(order_id, convert_params(body, REFUND_ORDER))
            except MagentoError as exc:
                raise SpecError(f"refunds[{index}]: {exc.rendered()}") from None
        return self._order_summary(order)

    def import_order(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Store an order in Magento's entity form, with its invoices and credit memos, as given."""
        imported = imports.parse(data)
        order = imported.order
        with self._lock:
            self._check_free(imported)
            for invoice in imported.invoices:
                self._invoices[invoice.entity_id] = invoice
            for memo in imported.creditmemos:
                self._creditmemos[memo.entity_id] = memo
            self._invoice_refunds.update(imported.invoice_refunds)
            self._store_order(order)
            self._bump_ids(imported)
        return self._order_summary(order)

    def import_orders(self, documents: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [self.add_order(document) for document in documents]

    def _check_free(self, imported: imports.Imported) -> None:
        order = imported.order
        if order.entity_id in self._orders:
            raise SpecError(f"order {order.entity_id} already exists")
        taken = [i.item_id for i in order.items if i.item_id in self._order_items]
        if taken:
            raise SpecError(f"order items {taken} already exist")
        for kind, ids, table in (
            ("invoice", [i.entity_id for i in imported.invoices], self._invoices),
            ("credit memo", [m.entity_id for m in imported.creditmemos], self._creditmemos),
        ):
            used = [entity_id for entity_id in ids if entity_id in table]
            if used or len(set(ids)) != len(ids):
                raise SpecError(f"{kind} ids {used or ids} already exist or repeat")

    def _bump_ids(self, imported: imports.Imported) -> None:
        order = imported.order
        bump = self._ids.bump
        bump("order", order.entity_id)
        bump("order_item", max(item.item_id for item in order.items))
        _bump_increment(self._ids, "order_increment", order.increment_id)
        address = order.data.get("billing_address") or {}
        bump("order_address", int(address.get("entity_id") or 0))
        for assignment in (order.data.get("extension_attributes") or {}).get(
            "shipping_assignments"
        ) or []:
            shipping_address = ((assignment or {}).get("shipping") or {}).get("address") or {}
            bump("order_address", int(shipping_address.get("entity_id") or 0))
        for history in order.status_histories:
            bump("status_history", int(history.get("entity_id") or 0))
        for invoice in imported.invoices:
            bump("invoice", invoice.entity_id)
            _bump_increment(self._ids, "invoice_increment", invoice.data.get("increment_id"))
            for line in invoice.items:
                bump("invoice_item", int(line.data.get("entity_id") or 0))
        for memo in imported.creditmemos:
            bump("creditmemo", memo.entity_id)
            _bump_increment(self._ids, "creditmemo_increment", memo.columns.get("increment_id"))
            for row in memo.items:
                bump("creditmemo_item", int(row.get("entity_id") or 0))
            for comment in memo.comments:
                bump("creditmemo_comment", int(comment.get("entity_id") or 0))

    def _store_order(self, order: Order) -> None:
        self._orders[order.entity_id] = order
        for item in order.items:
            self._order_items[item.item_id] = order.entity_id

    def add_orders(self, specs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [self.add_order(spec) for spec in specs]

    def _order_summary(self, order: Order) -> dict[str, Any]:
        with self._order_lock(order.entity_id):
            invoices = [self._invoices[i] for i in order.invoice_ids if i in self._invoices]
            first = invoices[0] if invoices else None
            return {
                "order_id": order.entity_id,
                "increment_id": order.increment_id,
                "invoice_id": first.entity_id if first else None,
                "invoice_ids": [invoice.entity_id for invoice in invoices],
                "state": order.state,
                "status": order.status,
                "payment_method": order.payment_method,
                "online": order.is_online,
                "grand_total": order.grand_total,
                "base_grand_total": order.base_grand_total,
                "total_paid": order.total_paid,
                "total_refunded": order.total_refunded,
                "transaction_id": first.data.get("transaction_id") if first else None,
                "items": [
                    {
                        "item_id": i.item_id,
                        "sku": i.sku,
                        "qty_ordered": i.qty_ordered,
                        "parent_item_id": i.parent_item_id,
                        "product_type": i.product_type,
                    }
                    for i in order.items
                ],
                "creditmemo_ids": list(order.creditmemo_ids),
            }

    def _get_order(self, order_id: int) -> Order:
        if order_id == 0:
            raise id_needed()
        order = self._orders.get(order_id)
        if order is None:
            raise entity_not_found()
        return order

    def has_order(self, order_id: int) -> bool:
        return order_id in self._orders

    def order(self, order_id: int) -> dict[str, Any]:
        """``GET /V1/orders/{id}``."""
        order = self._get_order(order_id)
        with self._order_lock(order_id):
            return order.to_dict()

    def search_orders(self, criteria: search.SearchCriteria) -> dict[str, Any]:
        """``GET /V1/orders``: the ``sales_order`` rows that match, each a whole order."""
        with self._lock:
            orders = list(self._orders.values())
        page, total = search.apply([o.data for o in orders], criteria, interfaces.ORDER.columns)
        items = []
        for index in page:
            with self._order_lock(orders[index].entity_id):
                items.append(orders[index].to_dict())
        return {"items": items, "search_criteria": criteria.to_dict(), "total_count": total}

    def order_item(self, item_id: int) -> dict[str, Any]:
        """``GET /V1/orders/items/{id}`` (with its ``parent_item``, as OrderItemRepository)."""
        if item_id == 0:
            raise id_needed()
        order = self._orders.get(self._order_items.get(item_id, 0))
        item = order.item(item_id) if order is not None else None
        if order is None or item is None:
            raise entity_not_found()
        with self._order_lock(order.entity_id):
            return item.to_dict()

    def search_order_items(self, criteria: search.SearchCriteria) -> dict[str, Any]:
        """``GET /V1/orders/items``: the ``sales_order_item`` rows that match."""
        with self._lock:
            items = [item for order in self._orders.values() for item in order.items]
        rows = [item.data for item in items]
        page, total = search.apply(rows, criteria, interfaces.ORDER_ITEM.columns)
        with self._lock:
            found = [items[index].to_dict() for index in page]
        return {"items": found, "search_criteria": criteria.to_dict(), "total_count": total}

    def order_id_of_invoice(self, invoice_id: int) -> int | None:
        invoice = self._invoices.get(invoice_id)
        return invoice.order_id if invoice else None

    def order_id_of_creditmemo(self, creditmemo_id: int) -> int | None:
        memo = self._creditmemos.get(creditmemo_id)
        return memo.order_id if memo else None

    def stock(self) -> list[dict[str, Any]]:
        """What refunds returned to stock, by product: ``[{product_id, sku, qty}]``."""
        with self._lock:
            return [
                {"product_id": product_id, "sku": sku, "qty": qty}
                for (product_id, sku), qty in sorted(self._stock.items())
            ]

    # ------------------------------------------------------------------ invoices

    def invoice(self, invoice_id: int) -> dict[str, Any]:
        """``GET /V1/invoices/{id}``."""
        if invoice_id == 0:
            raise id_needed()
        invoice = self._invoices.get(invoice_id)
        if invoice is None:
            raise entity_not_found()
        with self._order_lock(invoice.order_id):
            return invoice.to_dict()

    def search_invoices(self, criteria: search.SearchCriteria) -> dict[str, Any]:
        """``GET /V1/invoices``."""
        with self._lock:
            invoices = list(self._invoices.values())
        rows = [invoice.columns() for invoice in invoices]
        page, total = search.apply(rows, criteria, interfaces.INVOICE.columns)
        return {
            "items": [invoices[index].to_dict() for index in page],
            "search_criteria": criteria.to_dict(),
            "total_count": total,
        }

    # ------------------------------------------------------------------ refunds

    def _new_creditmemo_ids(self, item_count: int) -> tuple[int, str, int, int]:
        with self._lock:
            memo_id = self._ids.next("creditmemo")
            increment = f"{self._ids.next('creditmemo_increment'):09d}"
            first_item = self._ids.next("creditmemo_item", max(item_count, 0))
            history_id = self._ids.next("status_history")
            return memo_id, increment, first_item, history_id

    def _creation_comment(
        self, request: rules.RefundRequest, memo_id: int, now: str
    ) -> list[dict[str, Any]]:
        if not request.comment:
            return []
        with self._lock:
            comment_id = self._ids.next("creditmemo_comment")
        return [
            {
                "entity_id": comment_id,
                "parent_id": memo_id,
                "comment": request.comment,
                "is_customer_notified": int(request.append_comment and request.notify),
                "is_visible_on_front": request.is_visible_on_front,
                "created_at": now,
            }
        ]

    def _store(self, memo: Creditmemo, order: Order) -> None:
        with self._lock:
            is_new = memo.entity_id not in self._creditmemos
            self._creditmemos[memo.entity_id] = memo
        if is_new:
            order.creditmemo_ids.append(memo.entity_id)

    def _refund_transaction_id(self, invoice: Invoice) -> str:
        count = self._online_refunds[invoice.entity_id]
        self._online_refunds[invoice.entity_id] += 1
        base = f"{invoice.transaction_id or invoice.entity_id}-refund"
        return base if count == 0 else f"{base}-{count + 1}"

    def _taken_from(self, invoice_id: int, memo: Creditmemo) -> None:
        """Count a credit memo against its invoice (quantities and tax, for later limits)."""
        taken = self._invoice_refunds.setdefault(invoice_id, InvoiceRefunds())
        for row in memo.items:
            item_id = int(row.get("order_item_id") or 0)
            taken.qty[item_id] = taken.qty.get(item_id, 0.0) + float(row.get("qty") or 0)
        columns = memo.columns
        taken.tax_amount += float(columns.get("tax_amount") or 0)
        taken.base_tax_amount += float(columns.get("base_tax_amount") or 0)
        taken.discount_tax_compensation_amount += float(
            columns.get("discount_tax_compensation_amount") or 0
        )
        taken.base_discount_tax_compensation_amount += float(
            columns.get("base_discount_tax_compensation_amount") or 0
        )

    def _commit_draft(
        self,
        order: Order,
        draft: totals.Draft,
        request: rules.RefundRequest,
        *,
        online: bool,
        keep_status: bool,
    ) -> Creditmemo:
        now = self.now()
        refunded = draft.refunded_items
        memo_id, increment, first_item, history_id = self._new_creditmemo_ids(len(refunded))
        transaction_id = None
        if online and draft.invoice is not None:
            transaction_id = self._refund_transaction_id(draft.invoice)
        rules.apply_refund(
            order,
            draft,
            online=online,
            notify=request.notify,
            transaction_id=transaction_id,
            keep_status=keep_status,
            now=now,
            history_id=history_id,
        )
        if request.return_to_stock_items:
            for item, qty in rules.stock_returns(order, draft, request.return_to_stock_items):
                item.qty_returned = round(item.qty_returned + qty, 4)
                with self._lock:
                    key = (item.product_id, item.sku)
                    self._stock[key] = round(self._stock.get(key, 0.0) + qty, 4)
        memo = Creditmemo(
            rules.creditmemo_columns(
                order,
                draft,
                entity_id=memo_id,
                increment_id=increment,
                transaction_id=transaction_id,
                now=now,
            ),
            rules.creditmemo_items(draft, memo_id, first_item),
            self._creation_comment(request, memo_id, now),
        )
        if draft.invoice is not None:
            self._taken_from(draft.invoice.entity_id, memo)
        self._store(memo, order)
        return memo

    def refund_order(self, order_id: int, params: Mapping[str, Any]) -> int:
        """RefundOrder (``POST /V1/order/{orderId}/refund``): always offline."""
        request = rules.RefundRequest.from_params(dict(params))
        order = self._get_order(order_id)
        with self._order_lock(order_id):
            draft = rules.build_from_order(order, request)
            messages = rules.validate(order, draft, request)
            if messages:
                raise document_validation(messages)
            memo = self._commit_draft(order, draft, request, online=False, keep_status=True)
        if request.notify:
            self._send_email(memo, order, request.comment if request.append_comment else None)
        return memo.entity_id

    def refund_invoice(self, invoice_id: int, params: Mapping[str, Any]) -> int:
        """RefundInvoice (``POST /V1/invoice/{invoiceId}/refund``), online when asked and able."""
        request = rules.RefundRequest.from_params(dict(params))
        if invoice_id == 0:
            raise id_needed()
        invoice = self._invoices.get(invoice_id)
        if invoice is None:
            raise entity_not_found()
        order = self._get_order(invoice.order_id)
        with self._order_lock(order.entity_id):
            taken = self._invoice_refunds.get(invoice_id) or InvoiceRefunds()
            draft = rules.build_from_invoice(order, invoice, taken.copy(), request)
            messages = rules.validate(order, draft, request)
            if messages:
                raise document_validation(messages)
            online = request.is_online and order.is_online
            memo = self._commit_draft(order, draft, request, online=online, keep_status=False)
        if request.notify:
            self._send_email(memo, order, request.comment if request.append_comment else None)
        return memo.entity_id

    def refund_creditmemo(
        self, document: Mapping[str, Any], offline_requested: bool
    ) -> dict[str, Any]:
        """``POST /V1/creditmemo/refund``: register a caller-built credit memo."""
        document = dict(document)
        existing_id = document.get("entity_id")
        existing = self._creditmemos.get(existing_id) if existing_id else None
        if existing is not None and existing.columns.get("state") != CREDITMEMO_STATE_OPEN:
            raise MagentoError(400, "We cannot register an existing credit memo.")
        order_id = document.get("order_id")
        order = self._orders.get(order_id) if order_id else None
        if order is None:
            raise MagentoError(404, "We found an invalid order to refund.")
        with self._order_lock(order.entity_id):
            rules.check_document_refund(order, document)
            invoice_id = document.get("invoice_id")
            invoice = self._invoices.get(invoice_id) if invoice_id else None
            if invoice is not None and invoice.order_id != order.entity_id:
                invoice = None
            online = not offline_requested and invoice is not None and order.is_online
            grand_total = float(
                document.get("base_grand_total") or document.get("grand_total") or 0
            )
            if online and grand_total <= 0:
                raise MagentoError(400, "Online refund amount must be greater than zero.")
            transaction_id = document.get("transaction_id")
            if online and invoice is not None:
                transaction_id = self._refund_transaction_id(invoice)
            now = self.now()
            with self._lock:
                history_id = self._ids.next("status_history")
            rules.apply_document_refund(
                order,
                document,
                online=online,
                invoice=invoice,
                transaction_id=transaction_id,
                now=now,
                history_id=history_id,
            )
            document["state"] = CREDITMEMO_STATE_REFUNDED
            document["transaction_id"] = transaction_id
            memo = self._document_to_memo(order, document, existing, now)
            if invoice is not None:
                self._taken_from(invoice.entity_id, memo)
            self._store(memo, order)
            return memo.to_dict()

    def _document_to_memo(
        self,
        order: Order,
        document: dict[str, Any],
        existing: Creditmemo | None,
        now: str,
    ) -> Creditmemo:
        items_in = document.pop("items", None)
        comments_in = document.pop("comments", None)
        document.pop("extension_attributes", None)
        with self._lock:
            if existing is not None:
                memo_id = existing.entity_id
                columns = dict(existing.columns)
            else:
                memo_id = self._ids.next("creditmemo")
                columns = {
                    "increment_id": f"{self._ids.next('creditmemo_increment'):09d}",
                    "store_id": order.data.get("store_id", 1),
                    "created_at": now,
                }
                for key in _ORDER_TO_MEMO:
                    columns[key] = order.data.get(key)
            columns.update({k: v for k, v in document.items() if k in CREDITMEMO_COLUMNS})
            columns["entity_id"] = memo_id
            columns["order_id"] = order.entity_id
            columns["updated_at"] = now
            columns.setdefault("created_at", now)
            items = existing.items if existing is not None and items_in is None else []
            for raw in items_in or []:
                item = dict(raw)
                item.pop("extension_attributes", None)
                order_item = order.item(int(item.get("order_item_id") or 0))
                if order_item is not None:
                    item.setdefault("sku", order_item.sku)
                    item.setdefault("name", order_item.name)
                    item.setdefault("product_id", order_item.product_id)
                    item.setdefault("price", order_item.price)
                item.setdefault("base_price", item.get("price", 0.0))
                item.setdefault("base_cost", 0.0)
                item.setdefault("qty", 0.0)
                item["entity_id"] = self._ids.next("creditmemo_item")
                item["parent_id"] = memo_id
                items.append(item)
            comments = existing.comments if existing is not None and comments_in is None else []
            for raw in comments_in or []:
                comments.append(self._new_comment(memo_id, raw, now))
        return Creditmemo(columns=columns, items=items, comments=comments)

    def _new_comment(self, memo_id: int, raw: Mapping[str, Any], now: str) -> dict[str, Any]:
        return {
            "entity_id": self._ids.next("creditmemo_comment"),
            "parent_id": memo_id,
            "comment": str(raw.get("comment") or ""),
            "is_customer_notified": int(raw.get("is_customer_notified") or 0),
            "is_visible_on_front": int(raw.get("is_visible_on_front") or 0),
            "created_at": now,
        }

    def save_creditmemo(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /V1/creditmemo``: persist only; no totals, no state change, no validation."""
        document = dict(document)
        order_id = document.get("order_id")
        order = self._orders.get(order_id) if order_id else None
        if order is None:
            raise MagentoError(400, "The credit memo couldn't be saved.")
        existing_id = document.get("entity_id")
        existing = self._creditmemos.get(existing_id) if existing_id else None
        with self._order_lock(order.entity_id):
            memo = self._document_to_memo(order, document, existing, self.now())
            self._store(memo, order)
            return memo.to_dict()

    # ------------------------------------------------------------------ credit memos

    def _get_memo(self, creditmemo_id: int) -> Creditmemo:
        if creditmemo_id == 0:
            raise id_needed()
        memo = self._creditmemos.get(creditmemo_id)
        if memo is None:
            raise entity_not_found()
        return memo

    def creditmemo(self, creditmemo_id: int) -> dict[str, Any]:
        """``GET /V1/creditmemo/{id}``."""
        memo = self._get_memo(creditmemo_id)
        with self._lock:
            return memo.to_dict()

    def search_creditmemos(self, criteria: search.SearchCriteria) -> dict[str, Any]:
        """``GET /V1/creditmemos``."""
        with self._lock:
            memos = list(self._creditmemos.values())
        page, total = search.apply([memo.columns for memo in memos], criteria, CREDITMEMO_COLUMNS)
        with self._lock:
            items = [memos[index].to_dict() for index in page]
        return {"items": items, "search_criteria": criteria.to_dict(), "total_count": total}

    def creditmemos(self) -> list[dict[str, Any]]:
        """Every credit memo, oldest first, with its order id, items and comments."""
        with self._lock:
            return [memo.to_dict() for memo in self._creditmemos.values()]

    def creditmemo_comments(self, creditmemo_id: int) -> dict[str, Any]:
        """``GET /V1/creditmemo/{id}/comments``: an unknown id is an empty list, not a 404."""
        with self._lock:
            memo = self._creditmemos.get(creditmemo_id)
            comments = [dict(c) for c in memo.comments] if memo else []
        comments.sort(key=lambda c: (c.get("created_at", ""), c.get("entity_id", 0)))
        criteria = {
            "filter_groups": [
                {
                    "filters": [
                        {"field": "parent_id", "value": str(creditmemo_id), "condition_type": "eq"}
                    ]
                }
            ]
        }
        return {"items": comments, "search_criteria": criteria, "total_count": len(comments)}

    def add_creditmemo_comment(self, entity: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /V1/creditmemo/{id}/comments``: ``parent_id`` in the body decides."""
        failed = MagentoError(400, "Could not save the creditmemo comment.")
        parent_id = entity.get("parent_id")
        text = entity.get("comment")
        if not parent_id or not text or text == "0":
            raise failed
        memo = self._creditmemos.get(parent_id)
        if memo is None:
            raise failed
        now = self.now()
        with self._lock:
            comment_id = entity.get("entity_id")
            for comment in memo.comments:
                if comment_id and comment["entity_id"] == comment_id:
                    comment.update({k: v for k, v in entity.items() if k != "extension_attributes"})
                    return dict(comment)
            comment = self._new_comment(parent_id, entity, now)
            memo.comments.append(comment)
        order = self._orders.get(memo.order_id or 0)
        if comment["is_customer_notified"] and self.config.emails_enabled and order is not None:
            self._record_email("creditmemo_comment", memo, order, comment["comment"])
        return dict(comment)

    # ------------------------------------------------------------------ emails

    def _record_email(
        self, kind: str, memo: Creditmemo, order: Order, comment: str | None
    ) -> dict[str, Any]:
        with self._lock:
            email = {
                "email_id": len(self._outbox) + 1,
                "type": kind,
                "creditmemo_id": memo.entity_id,
                "creditmemo_increment_id": memo.columns.get("increment_id"),
                "order_id": order.entity_id,
                "order_increment_id": order.increment_id,
                "to": order.customer_email,
                "comment": comment,
                "sent_at": self.now(),
            }
            self._outbox.append(email)
            return email

    def _send_email(self, memo: Creditmemo, order: Order, comment: str | None) -> bool:
        if not self.config.emails_enabled:
            return False
        self._record_email("creditmemo", memo, order, comment)
        with self._lock:
            memo.columns["email_sent"] = 1
        return True

    def notify_creditmemo(self, creditmemo_id: int) -> bool:
        """``POST /V1/creditmemo/{id}/emails``: true if sent, false if emails are disabled."""
        memo = self._get_memo(creditmemo_id)
        order = self._orders.get(memo.order_id or 0)
        if order is None:
            return False
        return self._send_email(memo, order, None)

    def emails(self) -> list[dict[str, Any]]:
        """The outbox, oldest first."""
        with self._lock:
            return [dict(email) for email in self._outbox]

    # ------------------------------------------------------------------ faults

    def add_fault(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Add a fault (see ``faults``); raises ``FaultSpecError`` for a bad spec."""
        return self.faults.add(spec).to_dict()

    def clear_faults(self) -> None:
        self.faults.clear()

    # ------------------------------------------------------------------ request log and stats

    def record_request(
        self,
        method: str,
        path: str,
        route: str,
        status: int,
        duration_s: float,
        fault: str | None = None,
    ) -> None:
        """Log one request (never its headers or body) and count it. Called from the loop."""
        self._log.append((time.time(), method, path, route, status, duration_s, fault))
        self._stats[(route, status)] += 1

    def record_body(self, method: str, path: str, route: str, body: bytes) -> None:
        """Keep a Magento request body (never for the admin-token route: it holds a password)."""
        self._bodies.append((time.time(), method, path, route, body))

    def request_bodies(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The bodies the refund and credit-memo routes received (JSON-decoded when possible).

        Only routes whose operation takes a body (refunds, credit memo save, comment save);
        never the admin-token route. Oldest first.

        Each entry: ``{"route", "method", "path", "body"}``; ``route`` is the fault/stats route
        name (``order_refund``, ``invoice_refund``, ``creditmemo_refund``, ...).
        """
        entries = list(self._bodies)
        if limit is not None:
            entries = entries[-limit:] if limit > 0 else []
        out = []
        for _, method, path, route, raw in entries:
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            out.append({"route": route, "method": method, "path": path, "body": body})
        return out

    def requests(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The most recent requests, oldest first (``limit`` of them)."""
        entries = list(self._log)
        if limit is not None:
            entries = entries[-limit:] if limit > 0 else []
        return [
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp))
                + f".{int(stamp % 1 * 1000):03d}Z",
                "method": method,
                "path": path,
                "route": route,
                "status": status,
                "duration_ms": round(duration * 1000, 3),
                "fault": fault,
            }
            for stamp, method, path, route, status, duration, fault in entries
        ]

    def stats(self) -> dict[str, Any]:
        by_route: dict[str, dict[str, int]] = {}
        for (route, status), count in sorted(self._stats.items()):
            by_route.setdefault(route, {})[str(status)] = count
        with self._lock:
            return {
                "requests": sum(self._stats.values()),
                "by_route": by_route,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "orders": len(self._orders),
                "invoices": len(self._invoices),
                "creditmemos": len(self._creditmemos),
                "emails": len(self._outbox),
            }
