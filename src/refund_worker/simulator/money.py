"""Amounts the way Magento rounds and prints them."""

from __future__ import annotations

import math

_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CAD": "CA$", "AUD": "A$"}


def round_price(amount: float) -> float:
    """PriceCurrency::round: two decimals, half away from zero (like PHP's round)."""
    scaled = abs(amount) * 100.0
    rounded = math.floor(scaled + 0.5 + 1e-7) / 100.0
    return -rounded if amount < 0 else rounded


def php_number(amount: float) -> str:
    """A float as PHP prints it in a message (precision 14): ``25``, ``12.5``."""
    text = format(amount, ".14g")
    return "0" if text == "-0" else text


def format_currency(amount: float, currency: str) -> str:
    """Currency::formatTxt in the en_US locale: ``$25.00``, ``€1,234.50``."""
    symbol = _SYMBOLS.get(currency, currency)
    sign = "-" if amount < 0 else ""
    return f"{sign}{symbol}{abs(amount):,.2f}"
