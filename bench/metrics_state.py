"""What the API's ``/metrics`` costs the database: the state read on a large refunds table.

A private PostgreSQL database at the schema head gets ``--rows`` refunds, ``--succeeded`` of them
(a share) succeeded and the rest spread over the other statuses; then ``StateCollector`` (the
read behind ``GET /metrics``, uncached) runs ``--repeat`` times, and ``EXPLAIN`` shows which plan
PostgreSQL chose for the grouped query.

    python bench/metrics_state.py --rows 1000000       # ~1 min
"""

from __future__ import annotations

import argparse
import statistics
import time

import common
from sqlalchemy import func, select, text

from refund_worker.db import Database, upgrade
from refund_worker.exporter import COUNTED, StateCollector
from refund_worker.models import Refund

_FILL = """
INSERT INTO refunds (id, tenant, idempotency_key, payload_hash, request_json, order_id,
  service_requested, service, status, attempts, in_doubt, version, notify_customer,
  notification_status, notification_attempts, notification_version, created_at, updated_at)
SELECT md5(n::text)::uuid::text, 'default', 'k-' || n, md5(n::text), '{}', n, 'auto',
  CASE WHEN n % 3 = 0 THEN 'invoice' ELSE 'order' END,
  CASE WHEN n % 1000 < :succeeded THEN 'succeeded'
       ELSE (ARRAY['queued','retrying','failed','needs_attention','processing'])[1 + n % 5] END,
  1, n % 7 = 0, 1, true,
  CASE WHEN n % 1000 < :succeeded THEN 'sent' ELSE 'pending' END, 0, 0,
  now() - (n || ' seconds')::interval, now()
FROM generate_series(1, :rows) AS n
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--succeeded", type=float, default=0.99, help="share of rows")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with common.private_database("metrics_state") as url:
        database = Database.from_url(url)
        upgrade(database.engine)
        with database.engine.begin() as connection:
            connection.execute(text(_FILL), {"rows": args.rows,
                                             "succeeded": int(args.succeeded * 1000)})
            connection.execute(text("ANALYZE refunds"))
        collector = StateCollector(database, cache_seconds=0)
        list(collector.collect())  # warm: connections, plans, pages
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            list(collector.collect())
            times.append((time.perf_counter() - started) * 1000)
        service = func.coalesce(Refund.service, Refund.service_requested)
        grouped = (select(Refund.status, service, Refund.in_doubt, func.count(),
                          func.min(Refund.created_at))
                   .where(Refund.status.in_([s.value for s in COUNTED]))
                   .group_by(Refund.status, service, Refund.in_doubt))
        compiled = grouped.compile(database.engine, compile_kwargs={"literal_binds": True})
        with database.engine.connect() as connection:
            plan = [row[0] for row in connection.execute(text(f"EXPLAIN {compiled}"))]
            counted = connection.execute(select(func.count()).where(
                Refund.status.in_([s.value for s in COUNTED]))).scalar_one()
        database.dispose()
    result = {"rows": args.rows, "rows_counted": counted,
              "state_read_ms_median": round(statistics.median(times), 2),
              "state_read_ms_max": round(max(times), 2), "plan": plan}
    common.print_table("GET /metrics state read", [
        {k: v for k, v in result.items() if k != "plan"}])
    print("\n".join(plan))
    common.write_json("metrics_state", result)


if __name__ == "__main__":
    main()
