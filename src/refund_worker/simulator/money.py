"""Amounts the way Magento rounds and prints them."""

from __future__ import annotations

_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CAD": "CA$", "AUD": "A$"}


def round_price(amount: float) -> float:
    """PriceCurrency::round: two decimals, half away from zero (like PHP's round).

    The nudge makes binary halves such as 2.675 (really 2.67499...) round up, as PHP's
    pre-rounding does.
    """
    if not amount:
        return 0.0
    if amount > 0:
        return round(amount + 1e-9, 2)
    return -round(1e-9 - amount, 2)


def php_number(amount: float) -> str:
    """A float as PHP prints it in a message (precision 14): ``25``, ``12.5``."""
    text = format(amount, ".14g")
    return "0" if text == "-0" else text


def format_currency(amount: float, currency: str) -> str:
    """Currency::formatTxt in the en_US locale: ``$25.00``, ``€1,234.50``."""
    symbol = _SYMBOLS.get(currency, currency)
    sign = "-" if amount < 0 else ""
    return f"{sign}{symbol}{abs(amount):,.2f}"
