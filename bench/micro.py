"""Micro-benchmarks behind two changes: CPU per HTTP call and per published message.

* ``http``: ``MagentoClient.get_order`` (httpx's transport, then ``LeanTransport``) against
  ``httpx.Client`` on ``LeanTransport`` (how the client sent before) and urllib3's pool,
  ``--threads`` threads sharing one client, as in a worker; process CPU per call.
* ``publish``: ``send_task`` per id in ``producer.batch()`` (the code before) against
  ``tasks._publish`` (messages built once), into a Redis db of our own; CPU per message.

    python bench/micro.py http [--threads 32 --calls 150]
    python bench/micro.py publish [--messages 5000]
"""

from __future__ import annotations

import argparse
import json
import resource
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import common
import httpx
import redis
import urllib3


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _threads(call: Callable[[], Any], threads: int, calls: int) -> float:
    """CPU ms per call, ``threads`` threads each making ``calls`` calls (after a warm-up)."""
    result = 0.0
    for _ in range(2):
        workers = [
            threading.Thread(target=lambda: [call() for _ in range(calls)]) for _ in range(threads)
        ]
        started = _cpu()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        result = 1000 * (_cpu() - started) / (threads * calls)
    return result


def http(args: argparse.Namespace) -> list[dict[str, Any]]:
    from refund_worker.magento import BearerAuth, MagentoClient
    from refund_worker.magento.transport import LeanTransport
    from refund_worker.simulator.testing import simulator_process

    with simulator_process(seed=None, extra_args=["--token", common.TOKEN]) as simulator:
        order_id = common.create_orders(simulator, 1)[0][0]
        path = f"/rest/default/V1/orders/{order_id}"
        client = MagentoClient(simulator.url, auth=BearerAuth(common.TOKEN))
        lean = MagentoClient(
            simulator.url, auth=BearerAuth(common.TOKEN), transport=LeanTransport()
        )
        pool = urllib3.HTTPConnectionPool("127.0.0.1", simulator.port, maxsize=args.threads)
        headers = {"Authorization": f"Bearer {common.TOKEN}"}
        plain = httpx.Client(base_url=simulator.url, headers=headers)
        # The code before: MagentoClient sent through an httpx.Client (URL merge, cookie jar,
        # auth and redirect plumbing) on the same lean transport.
        before = httpx.Client(base_url=simulator.url, headers=headers, transport=LeanTransport())

        def with_urllib3() -> Any:
            return json.loads(pool.request("GET", path, headers=headers).data)

        rows = [
            ("MagentoClient.get_order (httpx transport)", lambda: client.get_order(order_id)),
            ("MagentoClient.get_order (lean transport)", lambda: lean.get_order(order_id)),
            ("httpx.Client + lean transport", lambda: json.loads(before.get(path).content)),
            ("httpx.Client.get + json", lambda: json.loads(plain.get(path).content)),
            ("urllib3 pool + json", with_urllib3),
        ]
        return [
            {"what": name, "cpu_ms_per_call": round(_threads(call, args.threads, args.calls), 3)}
            for name, call in rows
        ]


def publish(args: argparse.Namespace) -> list[dict[str, Any]]:
    from refund_worker import tasks
    from refund_worker.celery_app import PROCESS_TASK, QUEUE, create_app
    from refund_worker.settings import Settings

    url = f"redis://127.0.0.1:6379/{args.redis_db}"
    app = create_app(Settings(broker_url=url, magento_url="http://x", magento_token="bench-t"))
    client = redis.Redis.from_url(url)

    def send_task_each(ids: list[str]) -> None:  # what tasks._publish did before
        with app.producer_or_acquire() as producer, producer.batch():
            for refund_id in ids:
                app.send_task(PROCESS_TASK, (refund_id,), producer=producer, queue=QUEUE)

    def prebuilt(ids: list[str]) -> None:
        tasks._publish(app, PROCESS_TASK, ids)

    rows = []
    for name, send in (("send_task per id", send_task_each), ("tasks._publish", prebuilt)):
        client.flushdb()
        ids = [str(uuid.uuid4()) for _ in range(args.messages)]
        cpu, wall = _cpu(), time.perf_counter()
        for start in range(0, len(ids), 500):
            send(ids[start : start + 500])
        cpu, wall = _cpu() - cpu, time.perf_counter() - wall
        assert client.llen(QUEUE) == len(ids)
        rows.append({"what": name, "cpu_us_per_message": round(1e6 * cpu / len(ids), 1),
                     "messages_per_s": round(len(ids) / wall)})  # fmt: skip
    client.flushdb()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["http", "publish"])
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--calls", type=int, default=150)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--redis-db", type=int, default=7)
    args = parser.parse_args()
    rows = http(args) if args.what == "http" else publish(args)
    common.print_table(f"micro: {args.what}", rows)
    common.write_json(f"micro-{args.what}", {"settings": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
