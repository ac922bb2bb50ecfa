"""The business rules of docs/metrics.md that the gold job applies and its checks verify."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal

RECOMMENDATIONS = 3  # products listed in bought_together / viewed_together

# Engagement score weights: capped at SCORE_CAP.
SCORE_WEIGHTS = {"page_views": 1, "products_viewed": 2, "cart_adds": 5, "orders": 20}
SCORE_CAP = 100

# Segments, in the order they are tried.
HIGH_VALUE_LIFETIME_REVENUE = Decimal("1000")
LOYAL_LIFETIME_ORDERS = 3
AT_RISK_DAYS = 30

# The days before a date whose revenue the sales summary compares it with.
TRAILING_DAYS = 7

# An order is placed within seconds, one purchase event per line, so its lines lie at most this many
# days from its first line's: a gold date reads order lines from the day before to the day after.
ORDER_SPAN_DAYS = 1


def order_dates(lines: Iterable[tuple[str, dt.date]]) -> dict[str, dt.date]:
    """Each order's day, from its lines' (order id, event date): the day of its first line, on which
    all its lines count, so an order whose lines straddle midnight counts once."""
    days: dict[str, dt.date] = {}
    for order_id, event_date in lines:
        days[order_id] = min(event_date, days.get(order_id, event_date))
    return days
