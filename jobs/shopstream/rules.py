"""The business rules of docs/metrics.md that both the gold jobs and their checks apply."""

from decimal import Decimal

RECOMMENDATIONS = 3  # products listed in bought_together / viewed_together

# Engagement score weights: capped at SCORE_CAP.
SCORE_WEIGHTS = {"page_views": 1, "products_viewed": 2, "cart_adds": 5, "orders": 20}
SCORE_CAP = 100

# Segments, in the order they are tried.
HIGH_VALUE_LIFETIME_REVENUE = Decimal("1000")
LOYAL_LIFETIME_ORDERS = 3
AT_RISK_DAYS = 30
