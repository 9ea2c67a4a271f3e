"""The console's login, sessions and CSRF: operator keys only, a cookie that holds no key, a token
on every POST."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from refund_worker.api.console.sessions import ConsoleSessions
from refund_worker.api.keys import key_digest
from refund_worker.api.server import share_console_secret
from refund_worker.errors import ConfigurationError
from refund_worker.settings import ApiKey, get_settings, load_settings
from tests.api.support import Api, StartApi
from tests.console.support import add_refund, console, csrf_of, logged_in

SECRET = "console-test-secret-0123456789abcdef"


def _set_cookie_headers(response: object) -> list[str]:
    return response.headers.get_list("set-cookie")  # type: ignore[attr-defined,no-any-return]


def test_pages_need_a_login_and_send_back_where_they_were(api: Api) -> None:
    browser = console(api)

    for path in ("/console/refunds?status=any", "/console/refunds/" + "0" * 8):
        response = browser.get(path)
        assert response.status_code == 303
        location = urlsplit(response.headers["location"])
        assert location.path == "/console/login"
        assert parse_qs(location.query)["next"] == [path]
    assert browser.get("/console").headers["location"] == "/console/refunds"


def test_an_operator_key_logs_in_and_the_cookie_holds_no_key(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    browser = console(api)
    caplog.set_level(logging.DEBUG)

    response = browser.login(api.keys.operator, next_page="/console/refunds?status=any")

    assert response.status_code == 303
    assert response.headers["location"] == "/console/refunds?status=any"
    [session_cookie] = [c for c in _set_cookie_headers(response) if c.startswith("rw_console=")]
    attributes = {part.strip().split("=")[0].lower() for part in session_cookie.split(";")}
    assert {"httponly", "path", "max-age"} <= attributes
    assert "samesite=strict" in session_cookie.lower()
    assert "path=/console" in session_cookie.lower()
    assert "secure" not in attributes  # plain HTTP here; see the https test
    value = browser.client.cookies["rw_console"]
    assert api.keys.operator not in value
    assert key_digest(api.keys.operator) not in value
    assert api.keys.operator[4:20] not in value
    page = browser.get("/console/refunds")
    assert page.status_code == 200
    assert 'id="operator">alice<' in page.text
    assert api.keys.operator not in page.text
    # No key in any log line, of the console or of uvicorn (the key is never in a URL).
    assert all(api.keys.operator not in record.getMessage() for record in caplog.records)
    assert any("console login: alice" in record.getMessage() for record in caplog.records)


def test_a_producer_key_is_refused_with_a_403_page(api: Api) -> None:
    browser = console(api)

    response = browser.login(api.keys.producer)

    assert response.status_code == 403
    assert "text/html" in response.headers["content-type"]
    assert "is a producer key" in response.text
    assert "operator keys only" in response.text
    assert api.keys.producer not in response.text
    assert not any(c.startswith("rw_console=") for c in _set_cookie_headers(response))
    assert browser.get("/console/refunds").status_code == 303  # still not logged in


@pytest.mark.parametrize("key", ["rwk_" + "x" * 43, "", "  ", "a" * 5000])
def test_a_wrong_key_is_refused(api: Api, key: str) -> None:
    browser = console(api)

    response = browser.login(key)

    assert response.status_code == 401
    assert "not a valid API key" in response.text
    assert browser.get("/console/refunds").status_code == 303


def test_login_needs_the_forms_token_and_cookie(api: Api) -> None:
    browser = console(api)
    token = csrf_of(browser.get("/console/login").text)

    no_token = browser.post("/console/login", {"key": api.keys.operator})
    wrong = browser.post("/console/login", {"key": api.keys.operator, "csrf": token + "x"})
    stranger = console(api)  # a page of another site posting a login: no login cookie
    forced = stranger.post("/console/login", {"key": api.keys.operator, "csrf": token})

    for response in (no_token, wrong, forced):
        assert response.status_code == 403
        assert "expired or came from another site" in response.text
    assert stranger.get("/console/refunds").status_code == 303


def test_login_never_redirects_to_another_site(api: Api) -> None:
    for target in ("https://evil.example/", "//evil.example/console/", "/docs", "/console\\x"):
        response = console(api).login(api.keys.operator, next_page=target)
        assert response.status_code == 303
        assert response.headers["location"] == "/console/refunds"


def test_replay_without_the_csrf_token_is_403_and_replays_nothing(api: Api) -> None:
    refund_id = add_refund(api, "csrf-1", status="failed", last_error="ACL missing")
    browser = logged_in(api)
    other = logged_in(api)  # another session of the same operator: another token
    path = f"/console/refunds/{refund_id}/replay"

    missing = browser.post(path, {"reason": "retry", "what": "refund"})
    wrong = browser.post(path, {"reason": "retry", "what": "refund", "csrf": "x" * 43})
    borrowed = browser.post(
        path, {"reason": "retry", "what": "refund", "csrf": other.csrf()}
    )
    cross_site = browser.post(
        path,
        {"reason": "retry", "what": "refund", "csrf": browser.csrf()},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    anonymous = console(api).post(path, {"reason": "retry", "csrf": browser.csrf()})

    for response in (missing, wrong, borrowed, cross_site, anonymous):
        assert response.status_code == 403, response.text
    assert "CSRF token" in missing.text
    assert "session has ended" in anonymous.text
    assert api.row(refund_id).status == "failed"
    assert api.publisher.refunds == [refund_id]  # intake's publish only


def test_logout_needs_its_token_and_clears_the_cookie(api: Api) -> None:
    browser = logged_in(api)

    refused = browser.post("/console/logout", {})
    assert refused.status_code == 403
    assert browser.get("/console/refunds").status_code == 200

    response = browser.post("/console/logout", {"csrf": browser.csrf()})

    assert response.status_code == 303
    assert response.headers["location"] == "/console/login"
    cleared = [c for c in _set_cookie_headers(response) if c.startswith("rw_console=")]
    assert cleared
    assert "max-age=0" in cleared[0].lower()
    assert browser.get("/console/refunds").status_code == 303


def test_sessions_are_good_in_every_process_with_the_same_secret_and_keys(
    start_api: StartApi,
) -> None:
    first = start_api(console_secret=SECRET)
    second = start_api(console_secret=SECRET)
    other_secret = start_api(console_secret=SECRET[::-1])
    browser = logged_in(first)
    cookie = browser.client.cookies["rw_console"]

    for api, expected in ((second, 200), (other_secret, 303)):
        visitor = console(api)
        visitor.client.cookies.set("rw_console", cookie, domain="127.0.0.1", path="/console")
        assert visitor.get("/console/refunds").status_code == expected


def test_a_session_ends_when_its_key_is_removed_or_changed(start_api: StartApi) -> None:
    first = start_api(console_secret=SECRET)
    cookie = logged_in(first).client.cookies["rw_console"]
    alice = next(key for key in first.keys.entries if key.name == "alice")
    producers = [key for key in first.keys.entries if key.role == "producer"]
    rotated = ApiKey(name="alice", role="operator", sha256=key_digest("rwk_another"))
    demoted = ApiKey(name="alice", role="producer", sha256=alice.sha256)

    for entries in (producers, [*producers, rotated], [*producers, demoted]):
        again = start_api(console_secret=SECRET, api_keys=entries)
        visitor = console(again)
        visitor.client.cookies.set("rw_console", cookie, domain="127.0.0.1", path="/console")
        assert visitor.get("/console/refunds").status_code == 303


def test_cookies_are_secure_when_asked(start_api: StartApi) -> None:
    api = start_api(console_secret=SECRET, console_secure_cookies=True)
    browser = console(api)
    form = browser.get("/console/login")
    login_cookie = next(c for c in _set_cookie_headers(form) if c.startswith("rw_console_login="))
    assert "secure" in [part.strip().lower() for part in login_cookie.split(";")]
    # httpx will not send a Secure cookie over http, as a browser would not: send it by hand.
    seed = login_cookie.split(";")[0].split("=", 1)[1]
    response = browser.client.post(
        "/console/login",
        data={"key": api.keys.operator, "csrf": csrf_of(form.text)},
        headers={"Cookie": f"rw_console_login={seed}"},
    )
    [session_cookie] = [c for c in _set_cookie_headers(response) if c.startswith("rw_console=")]
    assert "secure" in [part.strip().lower() for part in session_cookie.split(";")]


def test_pages_forbid_scripts_framing_and_caching(api: Api) -> None:
    browser = logged_in(api)

    for path in ("/console/login", "/console/refunds"):
        headers = browser.get(path).headers
        assert "script-src" not in headers["content-security-policy"]
        assert "default-src 'none'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
        assert headers["cache-control"] == "no-store"
        assert headers["referrer-policy"] == "no-referrer"
    css = browser.get("/console/console.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert "http" not in css.text  # nothing fetched from elsewhere
    assert "/console" not in api.anonymous.get("/openapi.json").text


@pytest.mark.parametrize(
    ("secret", "problem"), [("short", "at least 32 characters"), ("changeme", "placeholder")]
)
def test_a_weak_console_secret_is_refused(secret: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        load_settings(_env_file=None, console_secret=secret)


def test_several_api_processes_get_one_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("REFUND_WORKER_CONSOLE_SECRET", raising=False)
    get_settings.cache_clear()
    try:
        share_console_secret()
        made = os.environ["REFUND_WORKER_CONSOLE_SECRET"]
        share_console_secret()  # already there: kept
        assert os.environ["REFUND_WORKER_CONSOLE_SECRET"] == made
        assert len(made) >= 32
        assert load_settings().console_secret is not None  # what each process then reads
    finally:
        os.environ.pop("REFUND_WORKER_CONSOLE_SECRET", None)  # monkeypatch restores the rest
        get_settings.cache_clear()


class TestSessionTokens:
    """``ConsoleSessions`` on its own, with a clock the test moves."""

    KEY = ApiKey(name="ops.team-1", role="operator", sha256="a" * 64)

    def sessions(self, now: list[float], keys: list[ApiKey] | None = None) -> ConsoleSessions:
        return ConsoleSessions(
            SECRET.encode(), keys or [self.KEY], lifetime_seconds=60, clock=lambda: now[0]
        )

    def test_a_cookie_is_good_until_it_expires(self) -> None:
        now = [1_000_000.0]
        sessions = self.sessions(now)
        cookie = sessions.issue(self.KEY)

        session = sessions.check(cookie)
        assert session is not None
        assert session.key == self.KEY
        now[0] += 59
        assert sessions.check(cookie) is not None
        now[0] += 1
        assert sessions.check(cookie) is None

    def test_a_tampered_cookie_is_refused(self) -> None:
        now = [1_000_000.0]
        sessions = self.sessions(now)
        name, expires, nonce, mac = sessions.issue(self.KEY).split(".")

        for forged in (
            f"{name}.{int(expires) + 3600}.{nonce}.{mac}",  # a longer session
            f"{name}.{expires}.{nonce}x.{mac}",
            f"{name}.{expires}.{nonce}.{mac[:-1]}",
            f"{name}.{expires}.{nonce}",
            "",
            "é.1.2.3",
            f"{name}.{expires}.{nonce}.{mac}.",
            "x" * 1000,
        ):
            assert sessions.check(forged) is None, forged

    def test_csrf_tokens_belong_to_one_session(self) -> None:
        sessions = self.sessions([1_000_000.0])
        one = sessions.check(sessions.issue(self.KEY))
        two = sessions.check(sessions.issue(self.KEY))
        assert one is not None
        assert two is not None

        assert one.csrf_token != two.csrf_token
        assert sessions.csrf_ok(one, one.csrf_token)
        assert not sessions.csrf_ok(one, two.csrf_token)
        assert not sessions.csrf_ok(one, None)
        assert not sessions.csrf_ok(one, "")
        assert not sessions.csrf_ok(one, "ü" * 43)
