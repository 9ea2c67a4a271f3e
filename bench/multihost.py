"""Workers on two hosts, Redis, PostgreSQL and the simulator on a third; one worker host loses its
network for 30 s mid-run, then comes back: nothing lost, nothing doubled, the other host carries on.

    python bench/multihost.py --refunds 600

The hosts are Linux network namespaces the script makes and removes (it needs root, iproute2,
``redis-server`` and PostgreSQL's ``initdb``/``pg_ctl``):

* ``rw-svc`` (10.77.0.1): a private ``redis-server``, a private PostgreSQL cluster (made with
  ``initdb`` in a temporary folder) and the Magento simulator;
* ``rw-a`` (10.77.0.2) and ``rw-b`` (10.77.0.3): one worker process each; beat runs on ``rw-b``.

Each namespace is joined by a veth pair to a bridge (``rwbr0``, 10.77.0.254) in the root namespace,
where this script plays the order system (intake) and the observer. The cut: the bridge end of host
a's veth goes down, so every packet to or from host a is dropped (no reset: connections time out
as they do when a cable or a switch goes), and comes back up ``--cut-seconds`` later.

Prints a table, writes ``bench/results/multihost.json`` and exits 1 when an invariant is broken.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import httpx  # noqa: E402
import redis  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from refund_worker.celery_app import create_app  # noqa: E402
from refund_worker.db import Database, upgrade  # noqa: E402
from refund_worker.intake import IntakeRejection, enqueue_refunds, validate_request  # noqa: E402
from refund_worker.publishing import CeleryPublisher  # noqa: E402
from refund_worker.simulator.testing import LISTENING_PREFIX  # noqa: E402
from refund_worker.testing.faults import (  # noqa: E402
    REFUND_ROUTES,
    TOKEN,
    Check,
    FaultConfig,
    Fleet,
    SimControl,
    evaluate,
    payloads,
    plan,
    settings_from_env,
    worker_env,
)

RESULTS = ROOT / "bench" / "results" / "multihost.json"
SUBNET = "10.77.0"
BRIDGE = "rwbr0"
HOSTS = {"svc": 1, "a": 2, "b": 3}  # namespace rw-<name> at 10.77.0.<n>
SERVICES_IP = f"{SUBNET}.1"
#: A worker's log line for a success: "[2026-12-06 01:05:00,123: INFO/...] refund <id> succeeded"
SUCCESS_LINE = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): [^]]*\] .*refund \S+ succeeded"
)
WORKER_LOG = re.compile(r"^([ab])\d+-\d+\.log$")


def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


def in_host(host: str, command: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", f"rw-{host}", *command]


# ----------------------------------------------------------------------------- the network


class Network:
    """The bridge, the three namespaces and their veth pairs."""

    def build(self) -> None:
        self.remove()  # what a run that was killed left behind
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{SUBNET}.254/24", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        for host, number in HOSTS.items():
            namespace, outside, inside = f"rw-{host}", f"rw{host}-br", f"rw{host}-eth"
            run("ip", "netns", "add", namespace)
            run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
            run("ip", "link", "set", inside, "netns", namespace)
            run("ip", "link", "set", outside, "master", BRIDGE, "up")
            run(*in_host(host, ["ip", "addr", "add", f"{SUBNET}.{number}/24", "dev", inside]))
            run(*in_host(host, ["ip", "link", "set", inside, "up"]))
            run(*in_host(host, ["ip", "link", "set", "lo", "up"]))

    def cut(self, host: str) -> None:
        run("ip", "link", "set", f"rw{host}-br", "down")

    def restore(self, host: str) -> None:
        run("ip", "link", "set", f"rw{host}-br", "up")

    def remove(self) -> None:
        for host in HOSTS:
            subprocess.run(["ip", "netns", "del", f"rw-{host}"], capture_output=True)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)


# ----------------------------------------------------------------------------- the services host


@dataclass
class Services:
    """Redis, PostgreSQL and the simulator, each listening on the services host's address."""

    workdir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    pg_data: Path | None = None

    @property
    def broker_url(self) -> str:
        return f"redis://{SERVICES_IP}:6379/0"

    @property
    def database_url(self) -> str:
        return f"postgresql+psycopg://postgres@{SERVICES_IP}:5432/refunds"

    @property
    def magento_url(self) -> str:
        return f"http://{SERVICES_IP}:8080"

    def start_redis(self) -> None:
        log = (self.workdir / "redis.log").open("ab")
        self.processes.append(
            subprocess.Popen(
                in_host("svc", ["redis-server", "--bind", SERVICES_IP, "--port", "6379",
                                "--save", "", "--appendonly", "no", "--protected-mode", "no"]),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        )  # fmt: skip
        client = redis.Redis(host=SERVICES_IP, port=6379, socket_connect_timeout=0.5)
        wait_for(client.ping, "redis-server")
        client.close()

    def start_postgres(self) -> None:
        binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        folder = self.workdir / "pg"
        folder.mkdir()
        shutil.chown(folder, "postgres")
        self.pg_data = folder / "data"
        as_postgres = ["runuser", "-u", "postgres", "--"]
        run(*as_postgres, str(binaries / "initdb"), "-D", str(self.pg_data), "-A", "trust",
            "-U", "postgres")  # fmt: skip
        with (self.pg_data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {SUBNET}.0/24 trust\n")
        options = (
            f"-c listen_addresses={SERVICES_IP} -c port=5432 -c max_connections=200"
            f" -c unix_socket_directories={folder}"
        )
        self._pg_ctl = in_host("svc", [*as_postgres, str(binaries / "pg_ctl")])
        log = str(folder / "postgres.log")
        run(*self._pg_ctl, "-D", str(self.pg_data), "-l", log, "-w", "-o", options, "start")
        admin = create_engine(
            f"postgresql+psycopg://postgres@{SERVICES_IP}:5432/postgres",
            isolation_level="AUTOCOMMIT",
        )
        with admin.connect() as connection:
            connection.execute(text("CREATE DATABASE refunds"))
        admin.dispose()
        engine = create_engine(self.database_url)
        upgrade(engine)
        engine.dispose()

    def start_simulator(self, fault_seed: int) -> None:
        log = (self.workdir / "simulator.log").open("ab")
        process = subprocess.Popen(
            in_host("svc", [sys.executable, "-m", "refund_worker.simulator", "--host", SERVICES_IP,
                            "--port", "8080", "--token", TOKEN, "--fault-seed", str(fault_seed)]),
            stdout=subprocess.PIPE, stderr=log, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        )  # fmt: skip
        self.processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        if not line.startswith(LISTENING_PREFIX):
            raise RuntimeError(f"the simulator did not start: {line!r}")
        wait_for(
            lambda: httpx.get(
                f"{self.magento_url}/_simulator/health", timeout=2
            ).raise_for_status(),
            "the simulator",
        )

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.pg_data is not None:
            subprocess.run(
                [*self._pg_ctl, "-D", str(self.pg_data), "-m", "immediate", "stop"],
                capture_output=True,
            )


def wait_for(probe: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            probe()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not come up") from None
            time.sleep(0.1)


# ----------------------------------------------------------------------------- the worker hosts


class HostFleet(Fleet):
    """``Fleet`` whose processes run inside a host's namespace: worker ``a1`` on host ``a``."""

    def _spawn(self, name: str, args: Sequence[str]) -> None:
        host = "b" if name == "beat" else name[0]
        self.starts[name] += 1
        log = (self.workdir / f"{name}-{self.starts[name]}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            in_host(host, [sys.executable, "-m", "refund_worker.cli", *args]),
            env=self.env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def successes_by_host(workdir: Path, started_wall: float) -> dict[str, list[float]]:
    """Seconds since the start of each success, per host, from the workers' own log lines."""
    found: dict[str, list[float]] = {}
    for path in sorted(workdir.glob("*.log")):
        if not (name := WORKER_LOG.match(path.name)):
            continue
        moments = found.setdefault(name.group(1), [])
        for line in path.read_text(errors="replace").splitlines():
            match = SUCCESS_LINE.match(line)
            if match:
                stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                moments.append(stamp - started_wall)
    return found


def rate(moments: list[float], start: float, end: float) -> float:
    return round(sum(start <= t < end for t in moments) / max(0.001, end - start), 2)


# ----------------------------------------------------------------------------- the run


@dataclass
class Options:
    refunds: int
    workers_per_host: int
    concurrency: int
    intake_seconds: float
    cut_at: float
    cut_seconds: float
    settle_timeout: float
    seed: int
    latency_ms: int


def run_multihost(options: Options, workdir: Path) -> dict[str, Any]:
    config = FaultConfig(
        refunds=options.refunds, workers=2 * options.workers_per_host,
        concurrency=options.concurrency, seed=options.seed, log_level="INFO",
    )  # fmt: skip
    network = Network()
    services = Services(workdir)
    fleet: HostFleet | None = None
    try:
        network.build()
        services.start_redis()
        services.start_postgres()
        services.start_simulator(options.seed)
        env = worker_env(config, services.broker_url, services.database_url, services.magento_url)
        sim = SimControl(services.magento_url)
        database = Database.from_url(services.database_url)
        orders = plan(config, random.Random(options.seed))
        for order, summary in zip(orders, sim.add_orders([o.spec for o in orders]), strict=True):
            order.order = summary
        requests = payloads(orders, f"multihost-{uuid.uuid4().hex[:6]}")
        for offset, route in enumerate(REFUND_ROUTES):  # refund calls in flight at the cut
            sim.add_fault({"route": route, "kind": "latency", "ms": options.latency_ms,
                           "probability": 1.0, "seed": options.seed * 10 + offset})  # fmt: skip
        fleet = HostFleet(env, workdir, options.concurrency)
        for host in ("a", "b"):
            for number in range(options.workers_per_host):
                fleet.start_worker(f"{host}{number + 1}")
        fleet.start_beat()
        fleet.wait_ready()
        print(f"· hosts up; {len(requests)} refunds on {len(orders)} orders; logs in {workdir}")

        publisher = CeleryPublisher(create_app(settings_from_env(env)))
        started, started_wall = time.monotonic(), time.time()
        timeline: list[dict[str, Any]] = []
        accepted: dict[str, str] = {}
        cut_done = restored = False
        batch = max(1, len(requests) // int(options.intake_seconds * 4))
        for number, start in enumerate(range(0, len(requests), batch)):
            while time.monotonic() - started < number * 0.25:
                time.sleep(0.01)
            elapsed = time.monotonic() - started
            if not cut_done and elapsed >= options.cut_at:
                network.cut("a")
                cut_done = True
                timeline.append({"t": round(elapsed, 1), "event": "host a cut off"})
                print(f"· t={elapsed:.0f}s host a cut off")
            if cut_done and not restored and elapsed >= options.cut_at + options.cut_seconds:
                network.restore("a")
                restored = True
                timeline.append({"t": round(elapsed, 1), "event": "host a back"})
                print(f"· t={elapsed:.0f}s host a back")
            validated = [validate_request(payload) for payload in requests[start : start + batch]]
            for result in enqueue_refunds(
                validated, database=database, publisher=publisher, created_by="multihost"
            ):
                if isinstance(result, IntakeRejection):
                    raise RuntimeError(f"intake refused a planned refund: {result.error}")
                accepted[result.idempotency_key] = result.refund_id
        while not restored:  # intake ended before the cut was over
            if not cut_done:
                network.cut("a")
                cut_done = True
                timeline.append({"t": round(time.monotonic() - started, 1), "event": "cut"})
            if time.monotonic() - started >= options.cut_at + options.cut_seconds:
                network.restore("a")
                restored = True
                timeline.append({"t": round(time.monotonic() - started, 1), "event": "host a back"})
            time.sleep(0.1)
        intake_ended = time.monotonic() - started
        print(f"· intake done: {len(accepted)} accepted at t={intake_ended:.0f}s; settling")
        settled = settle(database, fleet, options.settle_timeout, started)
        print(f"· settled at t={settled}s" if settled is not None else "· NOT settled")

        ids = list(accepted.values())
        before = (len(sim.creditmemos()), len(sim.emails()))
        publisher.publish_refunds(ids)  # every id once more: settled work stays as it is
        publisher.publish_notifications(ids)
        time.sleep(4)
        settle(database, fleet, 30, started)
        after = (len(sim.creditmemos()), len(sim.emails()))

        checks, figures, failures, violations = evaluate(
            database, sim, orders, accepted, started_wall
        )
        redelivered = f"{after[0] - before[0]}/{after[1] - before[1]}"
        checks.append(
            Check("late redelivery of all ids: new memos/emails", redelivered, after == before)
        )
        checks.append(Check("settled within the bound", settled is not None, settled is not None))
        moments = successes_by_host(workdir, started_wall)
        cut_end = options.cut_at + options.cut_seconds
        windows = {
            "before the cut": (2.0, options.cut_at),
            "during the cut": (options.cut_at, cut_end),
            "after the cut": (cut_end, max(cut_end + 1, intake_ended)),
        }
        rates = {
            label: {host: rate(moments.get(host, []), *span) for host in ("a", "b")}
            for label, span in windows.items()
        }
        fleet_before = rates["before the cut"]["a"] + rates["before the cut"]["b"]
        b_during = rates["during the cut"]["b"]
        checks.append(Check("host b refunds/s during the cut", b_during,
                            b_during >= 0.8 * fleet_before))  # fmt: skip
        checks.append(Check("host a refunds/s during the cut", rates["during the cut"]["a"]))
        checks.append(Check("both hosts' refunds/s before the cut", round(fleet_before, 2)))
        checks.append(Check("host a refunds/s after it came back", rates["after the cut"]["a"]))
        logs = fleet.log_counts({
            "lease lost before recording": "lease lost before recording",
            "lease lost before the refund call": "lease lost before the refund call",
            "sweeper re-published": "sweeper re-published",
            "reconciled": "reconcil",
        })  # fmt: skip
        return {
            "ok": all(check.ok is not False for check in checks),
            "options": asdict(options),
            "checks": [asdict(check) for check in checks],
            "figures": figures,
            "refunds_per_second": rates,
            "successes_by_host": {host: len(found) for host, found in moments.items()},
            "worker_starts": dict(fleet.starts),
            "unexpected_exits": fleet.unexpected_exits,
            "log_counts": logs,
            "failures_by_reason": failures,
            "violations": violations,
            "timeline": timeline,
            "settled_at_seconds": settled,
        }
    finally:
        if fleet is not None:
            fleet.stop()
        services.stop()
        network.remove()


def settle(database: Database, fleet: Fleet, timeout: float, started: float) -> float | None:
    from sqlalchemy import func, or_, select

    from refund_worker.models import Refund

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fleet.revive()
        with contextlib.suppress(Exception), database.session_scope() as session:
            open_refunds = session.scalar(
                select(func.count()).select_from(Refund).where(
                    or_(Refund.status.notin_(("succeeded", "failed")),
                        Refund.notification_status.in_(("pending", "sending", "retrying")))
                )
            )  # fmt: skip
            if open_refunds == 0:
                return round(time.monotonic() - started, 1)
        time.sleep(0.5)
    return None


def table(report: dict[str, Any]) -> str:
    width = max(len(check["label"]) for check in report["checks"]) + 2
    lines = [f"{'metric':<{width}}{'value':>12}  check", "-" * (width + 21)]
    for check in report["checks"]:
        mark = "" if check["ok"] is None else ("ok" if check["ok"] else "BROKEN")
        lines.append(f"{check['label']:<{width}}{check['value']!s:>12}  {mark}")
    lines += ["", f"{'refunds/s':<18}{'host a':>8}{'host b':>8}"]
    for label, by_host in report["refunds_per_second"].items():
        lines.append(f"{label:<18}{by_host['a']:>8}{by_host['b']:>8}")
    return "\n".join(lines)


@contextlib.contextmanager
def working_folder(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    folder = Path(tempfile.mkdtemp(prefix="refund-multihost-"))
    os.chmod(folder, 0o755)  # the postgres user makes its cluster inside
    yield folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--refunds", type=int, default=600)
    parser.add_argument("--workers-per-host", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8, help="threads per worker process")
    parser.add_argument("--intake-seconds", type=float, default=75.0)
    parser.add_argument("--cut-at", type=float, default=20.0, help="seconds after the start")
    parser.add_argument("--cut-seconds", type=float, default=30.0)
    parser.add_argument("--settle-timeout", type=float, default=240.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--latency-ms",
        type=int,
        default=500,
        help="Magento's time per refund call (calls in flight)",
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if os.geteuid() != 0 or shutil.which("ip") is None:
        parser.error("needs root and iproute2 (it makes network namespaces)")
    options = Options(
        refunds=args.refunds, workers_per_host=args.workers_per_host,
        concurrency=args.concurrency, intake_seconds=args.intake_seconds, cut_at=args.cut_at,
        cut_seconds=args.cut_seconds, settle_timeout=args.settle_timeout, seed=args.seed,
        latency_ms=args.latency_ms,
    )  # fmt: skip
    with working_folder(args.workdir) as workdir:
        os.chmod(workdir, 0o755)
        report = run_multihost(options, workdir)
    report["date"] = time.strftime("%Y-%m-%d")
    print()
    print(table(report))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {args.output}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
