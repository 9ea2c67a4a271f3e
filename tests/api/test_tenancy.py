"""Each producer key is a tenant: its own idempotency keys, its own refunds; operators see all."""

from __future__ import annotations

from sqlalchemy import update

from refund_worker.models import Refund
from tests.api.support import Api, refund


def test_two_tenants_may_use_the_same_key_and_get_two_refunds(api: Api) -> None:
    erp = api.producer.post("/v1/refunds", json=refund("RMA-1", order_id=10))
    returns = api.other_producer.post("/v1/refunds", json=refund("RMA-1", order_id=20))

    assert (erp.status_code, returns.status_code) == (202, 202)
    assert erp.json()["refund_id"] != returns.json()["refund_id"]
    assert not returns.json()["duplicate"]
    # Each repeat finds its own, and a different payload is a conflict naming its own refund only.
    again = api.other_producer.post("/v1/refunds", json=refund("RMA-1", order_id=20))
    assert (again.status_code, again.json()["refund_id"]) == (200, returns.json()["refund_id"])
    conflict = api.other_producer.post("/v1/refunds", json=refund("RMA-1", order_id=10))
    assert conflict.status_code == 409
    assert erp.json()["refund_id"] not in conflict.text
    assert api.stored() == 2


def test_a_producer_reads_and_lists_only_its_own_refunds(api: Api) -> None:
    mine = api.producer.post("/v1/refunds", json=refund("mine")).json()["refund_id"]
    theirs = api.other_producer.post("/v1/refunds", json=refund("theirs")).json()["refund_id"]

    assert api.producer.get(f"/v1/refunds/{mine}").status_code == 200
    hidden = api.producer.get(f"/v1/refunds/{theirs}")
    assert hidden.status_code == 404
    assert "theirs" not in hidden.text
    listed = api.producer.get("/v1/refunds").json()["refunds"]
    assert [row["id"] for row in listed] == [mine]
    by_key = api.producer.get("/v1/refunds", params={"idempotency_key": "theirs"}).json()
    assert by_key["refunds"] == []
    forbidden = api.producer.get("/v1/refunds", params={"tenant": "returns"})
    assert forbidden.status_code == 403


def test_a_rotated_key_of_the_same_tenant_sees_the_same_refunds(api: Api) -> None:
    first = api.producer.post("/v1/refunds", json=refund("rot-1")).json()
    again = api.rotated_producer.post("/v1/refunds", json=refund("rot-1"))

    assert again.status_code == 200
    assert again.json()["refund_id"] == first["refund_id"]
    view = api.rotated_producer.get(f"/v1/refunds/{first['refund_id']}").json()
    assert (view["tenant"], view["created_by"]) == ("erp", "erp")


def test_an_idempotency_key_equal_to_another_refunds_id_never_reaches_it(api: Api) -> None:
    victim = api.other_producer.post("/v1/refunds", json=refund("v-1")).json()["refund_id"]
    # The attacker uses the victim's refund id as its own idempotency key.
    attacker = api.producer.post("/v1/refunds", json=refund(victim)).json()["refund_id"]

    assert attacker != victim
    assert api.producer.get(f"/v1/refunds/{victim}").status_code == 404
    listed = api.producer.get("/v1/refunds", params={"idempotency_key": victim}).json()
    assert [row["id"] for row in listed["refunds"]] == [attacker]
    with api.database.session_scope() as session:
        session.execute(update(Refund).values(status="failed", last_error="boom"))
    replayed = api.operator.post(f"/v1/refunds/{victim}/replay", json={"reason": "checked"})
    assert replayed.json()["id"] == victim  # by id: the victim itself, never the attacker's row
    assert api.row(attacker).status == "failed"


def test_operators_see_every_tenant_and_who_did_what(api: Api) -> None:
    erp = api.producer.post("/v1/refunds", json=refund("op-1")).json()["refund_id"]
    returns = api.other_producer.post("/v1/refunds", json=refund("op-1")).json()["refund_id"]

    everything = api.operator.get("/v1/refunds").json()["refunds"]
    assert {(row["id"], row["tenant"], row["created_by"]) for row in everything} == {
        (erp, "erp", "erp"),
        (returns, "returns", "returns"),
    }
    one_tenant = api.operator.get("/v1/refunds", params={"tenant": "returns"}).json()["refunds"]
    assert [row["id"] for row in one_tenant] == [returns]
    assert api.operator.get(f"/v1/refunds/{erp}").status_code == 200
    with api.database.session_scope() as session:
        session.execute(update(Refund).where(Refund.id == erp).values(status="failed"))
    view = api.operator.post(f"/v1/refunds/{erp}/replay", json={"reason": "fixed"}).json()
    assert view["replayed_by"] == "alice"
    assert view["created_by"] == "erp"


def test_the_same_key_and_order_number_in_two_tenants_are_two_refunds_each_unseen(
    api: Api,
) -> None:
    body = {"idempotency_key": "RMA-9", "order_increment_id": "000000123"}
    erp = api.producer.post("/v1/refunds", json=body).json()["refund_id"]
    returns = api.other_producer.post("/v1/refunds", json=body)

    assert returns.status_code == 202  # not a duplicate of the other tenant's
    assert returns.json()["refund_id"] != erp
    listed = api.producer.get("/v1/refunds", params={"order_increment_id": "000000123"}).json()
    assert [row["id"] for row in listed["refunds"]] == [erp]
    everyone = api.operator.get("/v1/refunds", params={"order_increment_id": "000000123"}).json()
    assert len(everyone["refunds"]) == 2
