"""``views`` (Core rows, what the CLI prints) shows a refund exactly as the pydantic views of
``queries`` (what the HTTP API serves) do, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from refund_worker import queries, views
from refund_worker.models import utcnow
from refund_worker.views import RefundFilter
from tests.cli.conftest import Cli


def test_views_show_what_the_pydantic_views_show(any_cli: Cli) -> None:
    now = utcnow().replace(microsecond=0)  # a whole second here, a fraction below
    failed = any_cli.add(
        "rma-1", status="failed", last_error="holded", attempts=3, created_at=now, in_doubt=True
    )
    any_cli.add_call(failed, "order_get", 12.5, created_at=now)
    any_cli.add_call(failed, "order_refund", 80.25, http_status=None)
    any_cli.add(
        "rma-2",
        status="needs_attention",
        attention="a memo that does not fit",
        created_at=now - timedelta(seconds=1, microseconds=250),
    )
    any_cli.add("rma-3", status="succeeded", notification_status="sent", creditmemo_id=7)
    everything = RefundFilter()
    with any_cli.database.session_scope() as session:
        expected = [view.summary() for view in queries.list_refunds(session, everything)]
        expected_one = queries.refund_view(session, failed)
        expected_events = queries.refund_events(session, failed)
    assert expected_one is not None
    with any_cli.database.connection_scope() as connection:
        listed = [views.document(row) for row in views.summaries(connection, everything)]
        one = views.refund_document(connection, failed)
        events = views.events(connection, failed)
        missing = views.refund_document(connection, "no-such-id")
    assert listed == expected
    assert [list(row) for row in listed] == [list(row) for row in expected]  # the same order
    assert one == expected_one.model_dump(mode="json")
    assert events == expected_events
    assert missing is None


def test_the_filter_selects_the_same_rows_in_core_and_orm(any_cli: Cli) -> None:
    any_cli.add("a", status="failed", last_error="The order is HOLDED")
    any_cli.add("b", status="failed", last_error="100%_off", tenant="erp")
    any_cli.add("c", status="succeeded", tenant="erp")
    filters = [
        RefundFilter(status="failed"),
        RefundFilter(tenant="erp"),
        RefundFilter(error_contains="holded"),
        RefundFilter(error_contains="%_"),
        RefundFilter(keys=("a", "c"), limit=1),
        RefundFilter(service="auto", since=utcnow() - timedelta(hours=1)),
    ]
    for refund_filter in filters:
        with any_cli.database.session_scope() as session:
            orm = [row.id for row in queries.select_refunds(session, refund_filter)]
        with any_cli.database.connection_scope() as connection:
            core = [row.id for row in views.summaries(connection, refund_filter)]
        assert core == orm, refund_filter
        assert orm, refund_filter
