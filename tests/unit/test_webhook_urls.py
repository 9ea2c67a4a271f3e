"""The SSRF guard: https at public addresses only, unless the host is explicitly allowed."""

from __future__ import annotations

import pytest

from refund_worker.webhooks.urls import UnsafeDestination, check_destination


def public(host: str, port: int) -> list[str]:
    return ["93.184.215.14"]


def resolves_to(address: str):  # type: ignore[no-untyped-def]
    return lambda host, port: [address]


@pytest.mark.parametrize(("url", "why"), [
    ("http://hooks.example.com/x", "must be https"),
    ("ftp://hooks.example.com/x", "must be an https"),
    ("https://user:pw@hooks.example.com/x", "user or password"),
    ("https:///x", "no host"),
    ("https://hooks.example.com/x#frag", "fragment"),
    ("https://hooks.example.com:99999/x", "invalid port"),
    ("https://hooks.example.com/a b", "spaces"),
    ("https://127.0.0.1/x", "loopback"),
    ("https://10.0.0.5/x", "private"),
    ("https://169.254.169.254/latest/meta-data", "private"),
    ("https://[::1]/x", "loopback"),
    ("https://[::ffff:127.0.0.1]/x", "loopback"),
    ("https://0.0.0.0/x", "reserved"),
    ("https://" + "a" * 2050 + ".example.com/", "longer than"),
])
def test_refused(url: str, why: str) -> None:
    with pytest.raises(UnsafeDestination, match=why):
        check_destination(url, [], resolve=public)


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "192.168.0.1", "fd00::1",
                                     "169.254.1.1", "100.64.0.1"])
def test_a_name_resolving_to_a_private_address_is_refused(address: str) -> None:
    with pytest.raises(UnsafeDestination, match="resolves to"):
        check_destination("https://hooks.example.com/x", [], resolve=resolves_to(address))


def test_a_public_https_url_and_allowed_hosts_pass() -> None:
    assert check_destination("https://hooks.example.com/x", [], resolve=public)
    assert check_destination("http://127.0.0.1:8080/x", ["127.0.0.1"], resolve=public)
    assert check_destination("http://receiver:8080/x", ["receiver"],
                             resolve=resolves_to("172.18.0.4"))


def test_a_name_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(UnsafeDestination, match="cannot resolve"):
        check_destination("https://no-such-host.invalid/x", [])
