"""``tables`` (the Core columns the read-only commands use) agrees with ``models``."""

from __future__ import annotations

import pytest

from refund_worker import models, tables


@pytest.mark.parametrize(
    ("light", "declared"),
    [
        (tables.refunds, models.Refund.__table__),
        (tables.magento_calls, models.MagentoCall.__table__),
        (tables.refund_events, models.RefundEvent.__table__),
        (tables.refund_counts, models.RefundCount.__table__),
    ],
    ids=["refunds", "magento_calls", "refund_events", "refund_counts"],
)
def test_each_column_is_the_tables_own_with_its_type(light: object, declared: object) -> None:
    assert light.name == declared.name  # type: ignore[attr-defined]
    for column in light.c:  # type: ignore[attr-defined]
        own = declared.c[column.name]  # type: ignore[attr-defined]
        assert type(column.type) is type(own.type), column.name
