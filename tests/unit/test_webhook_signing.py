"""Standard Webhooks signing: our ``sign``/``verify`` agree with the reference package both
ways; tampering, staleness and a wrong secret are refused; secrets are derived, never stored."""

from __future__ import annotations

import base64
import time

import pytest
import standardwebhooks
from pydantic import SecretStr

from refund_worker.errors import ConfigurationError
from refund_worker.webhooks import WebhookVerificationError, signed_headers, verify
from refund_worker.webhooks.signing_keys import derive_secret, key_id

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
BODY = b'{"type":"refund.succeeded","timestamp":"2026-12-06T01:00:00.000000Z","data":{}}'


def test_our_signature_passes_the_reference_verifier_and_theirs_ours() -> None:
    headers = signed_headers(SECRET, "msg_1", BODY)
    assert headers["webhook-signature"].startswith("v1,")
    assert standardwebhooks.Webhook(SECRET).verify(BODY, headers)["type"] == "refund.succeeded"
    now = int(time.time())
    theirs = standardwebhooks.Webhook(SECRET).sign("msg_2", _dt(now), BODY.decode())
    received = {"Webhook-Id": "msg_2", "Webhook-Timestamp": str(now),
                "Webhook-Signature": theirs}
    assert verify(SECRET, received, BODY)["type"] == "refund.succeeded"


def _dt(seconds: int) -> object:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, tz=UTC)


@pytest.mark.parametrize("tamper", ["body", "id", "timestamp", "secret", "stale", "missing"])
def test_anything_altered_is_refused(tamper: str) -> None:
    headers = signed_headers(SECRET, "msg_1", BODY)
    body, secret = BODY, SECRET
    if tamper == "body":
        body = BODY.replace(b"succeeded", b"failed")
    elif tamper == "id":
        headers["webhook-id"] = "msg_2"
    elif tamper == "timestamp":
        headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) + 1)
    elif tamper == "secret":
        secret = "whsec_" + base64.b64encode(b"x" * 32).decode()
    elif tamper == "stale":
        headers = signed_headers(SECRET, "msg_1", BODY, timestamp=int(time.time()) - 301)
    else:
        del headers["webhook-signature"]
    with pytest.raises(WebhookVerificationError):
        verify(secret, headers, body)


def test_a_rotated_secret_list_of_signatures_is_accepted() -> None:
    headers = signed_headers(SECRET, "msg_1", BODY)
    headers["webhook-signature"] = "v1,bm90IGl0 " + headers["webhook-signature"]
    assert verify(SecretStr(SECRET), headers, BODY) is not None


def test_secrets_are_derived_from_the_key_and_never_shown_in_repr() -> None:
    key = b"k" * 40
    first = derive_secret(key, "endpoint-1", "salt")
    assert first == derive_secret(key, "endpoint-1", "salt")  # the same every time
    assert first != derive_secret(key, "endpoint-2", "salt")
    assert first != derive_secret(key, "endpoint-1", "other salt")
    assert first != derive_secret(b"j" * 40, "endpoint-1", "salt")  # the DB alone cannot
    assert first.get_secret_value() not in repr(first)
    assert len(base64.b64decode(first.get_secret_value().removeprefix("whsec_"))) == 32
    with pytest.raises(ConfigurationError, match="not the key"):
        derive_secret(key, "endpoint-1", "salt", expected_key_id=key_id(b"j" * 40))


@pytest.mark.parametrize(("value", "message"), [
    ("changeme", "REFUND_WORKER_SECRET_KEY is a placeholder"),
    ("too-short", "REFUND_WORKER_SECRET_KEY must be at least 32 characters"),
])
def test_the_secret_key_setting_is_checked(value: str, message: str) -> None:
    from refund_worker.settings import load_settings

    with pytest.raises(ConfigurationError, match=message):
        load_settings(secret_key=value, _env_file=None)
    settings = load_settings(secret_key="s" * 40, _env_file=None)
    assert "s" * 40 not in repr(settings)
    assert "s" * 40 not in settings.model_dump_json()
