"""A simulated shop: catalog, customers with behaviour profiles, sessions walking a funnel, and
the faults real pipelines see (late, duplicate and malformed events).

Pure Python and deterministic: the same `GeneratorConfig` (seed included) yields the same
records, byte for byte. Nothing here talks to Kafka.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import json
import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from decimal import ROUND_HALF_UP, Decimal

from shopstream import schema

UTC = dt.UTC
CENT = Decimal("0.01")

CATEGORIES = {
    # category: (price range, brands)
    "electronics": ((49, 1499), ("Voltix", "Nordwave", "Pixelon", "Arcadia")),
    "home": ((9, 399), ("Hearthly", "Casa Verde", "Linden & Co")),
    "fashion": ((12, 249), ("Mirela", "North Thread", "Urbane")),
    "beauty": ((5, 89), ("Lumière", "Bloom Lab", "Pure Roots")),
    "sports": ((15, 599), ("Stride", "Peakform", "Aerofit")),
    "books": ((6, 59), ("Quill House", "Paperlane")),
    "toys": ((8, 149), ("Tumble", "Brightblock")),
    "grocery": ((2, 39), ("Fieldfresh", "Daily Pantry")),
}
COUNTRIES = (
    ("US", 40),
    ("GB", 12),
    ("DE", 10),
    ("FR", 8),
    ("CA", 7),
    ("NL", 5),
    ("ES", 5),
    ("IT", 5),
    ("AU", 4),
    ("SE", 4),
)


@dataclass(frozen=True)
class Profile:
    """How a kind of customer behaves; multipliers apply to the funnel probabilities."""

    name: str
    weight: float
    views_mean: float  # product pages per session
    cart_mult: float
    purchase_mult: float
    basket_extra: float  # chance of one more unit or line
    mobile_share: float


PROFILES = (
    Profile("browser", 0.45, 3.0, 0.6, 0.6, 0.1, 0.65),
    Profile("bargain_hunter", 0.25, 5.0, 1.0, 0.9, 0.2, 0.55),
    Profile("loyal", 0.20, 4.0, 1.4, 1.3, 0.3, 0.45),
    Profile("big_spender", 0.10, 4.0, 1.6, 1.5, 0.5, 0.35),
)


@dataclass(frozen=True)
class Funnel:
    """Probabilities of each step of a session; profile multipliers scale them."""

    home_first: float = 0.6  # a session opens on the home page (else straight on a product)
    category_view: float = 0.7  # a category page before each product page
    add_to_cart: float = 0.15  # per product page viewed
    view_cart: float = 0.8  # cart page when the cart is not empty
    checkout: float = 0.6  # checkout page after the cart page
    purchase: float = 0.75  # checkout completes an order
    discount: float = 0.2  # an order line carries a discount

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"funnel probability {f.name}={value} is outside [0, 1]")

    @classmethod
    def parse(cls, assignments: list[str]) -> Funnel:
        """From `name=value` strings, as given on the command line."""
        names = {f.name for f in fields(cls)}
        values = {}
        for item in assignments:
            name, sep, raw = item.partition("=")
            if not sep or name not in names:
                raise ValueError(f"bad funnel setting {item!r}: use NAME=PROBABILITY with NAME one of {sorted(names)}")
            try:
                values[name] = float(raw)
            except ValueError:
                raise ValueError(f"bad funnel setting {item!r}: {raw!r} is not a number") from None
        return cls(**values)


@dataclass(frozen=True)
class GeneratorConfig:
    seed: int = 42
    start_date: dt.date = dt.date(2026, 11, 1)
    days: int = 1
    events_per_day: int = 10_000
    products: int = 200
    users: int = 2_000
    funnel: Funnel = field(default_factory=Funnel)
    late_fraction: float = 0.01
    max_lateness_seconds: float = 3 * 3600  # late events arrive 2 minutes to this much after they happen
    duplicate_fraction: float = 0.01
    malformed_fraction: float = 0.005

    def __post_init__(self) -> None:
        for name in ("late_fraction", "duplicate_fraction", "malformed_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.days < 1 or self.events_per_day < 1 or self.products < 1 or self.users < 1:
            raise ValueError("days, events per day, products and users must be positive")
        if self.max_lateness_seconds < 120:
            raise ValueError("max lateness must be at least 120 seconds")


# Kinds of record the generator emits. Only VALID ones should reach silver.
VALID = "valid"
DUPLICATE = "duplicate"
MALFORMED = "malformed"


@dataclass(frozen=True)
class Record:
    """One Kafka message, sent to raw-events and to `topic`."""

    topic: str
    key: bytes
    value: bytes
    kind: str
    event_type: str
    event_time: dt.datetime
    ingest_time: dt.datetime
    reason: str | None = None  # quarantine reason a malformed record must get
    late: bool = False

    @property
    def lateness_seconds(self) -> float:
        return (self.ingest_time - self.event_time).total_seconds()


@dataclass(frozen=True)
class Product:
    product_id: str
    name: str
    category: str
    brand: str
    price: Decimal
    weight: float


@dataclass(frozen=True)
class User:
    user_id: str
    profile: Profile
    country: str


def money(value: float | Decimal) -> Decimal:
    return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)


def build_catalog(rng: random.Random, count: int) -> list[Product]:
    products = []
    categories = list(CATEGORIES)
    for i in range(count):
        category = categories[i % len(categories)]
        (low, high), brands = CATEGORIES[category]
        brand = rng.choice(brands)
        # Log-uniform prices ending in .99, like a real shelf.
        price = money(math.floor(math.exp(rng.uniform(math.log(low), math.log(high)))) + 0.99)
        products.append(
            Product(f"p{i:05d}", f"{brand} {category} item {i}", category, brand, price, 1.0 / (1 + i % 50) ** 0.8)
        )
    return products


def build_users(rng: random.Random, count: int) -> list[User]:
    countries, country_weights = zip(*COUNTRIES, strict=True)
    weights = [p.weight for p in PROFILES]
    return [
        User(f"u{i:06d}", rng.choices(PROFILES, weights)[0], rng.choices(countries, country_weights)[0])
        for i in range(count)
    ]


def catalog_records(products: list[Product], updated_at: dt.datetime) -> list[Record]:
    out = []
    for p in products:
        row = {
            "product_id": p.product_id,
            "name": p.name,
            "category": p.category,
            "brand": p.brand,
            "price": p.price,
            "currency": "USD",
            "updated_at": updated_at,
        }
        value = encode(schema.PRODUCT_COLUMNS, row)
        out.append(
            Record(schema.TOPIC_PRODUCTS, p.product_id.encode(), value, VALID, "product", updated_at, updated_at)
        )
    return out


def encode(columns, row: dict) -> bytes:
    return json.dumps(
        {c.name: schema.to_json_value(c.type, row[c.name]) for c in columns if c.name in row},
        separators=(",", ":"),
    ).encode()


class Shop:
    """Walks customers through sessions and yields their events in the order they are sent."""

    def __init__(self, config: GeneratorConfig):
        self.config = config
        self.rng = random.Random(config.seed)
        self.products = build_catalog(self.rng, config.products)
        self.product_weights = [p.weight for p in self.products]
        self.users = build_users(self.rng, config.users)
        self.by_category: dict[str, list[Product]] = {}
        for p in self.products:
            self.by_category.setdefault(p.category, []).append(p)
        self.sessions_per_day = config.events_per_day / self._mean_events_per_session()

    # -- sessions ---------------------------------------------------------------------------

    def _mean_events_per_session(self) -> float:
        pilot = Shop.__new__(Shop)
        pilot.__dict__.update(self.__dict__)
        pilot.rng = random.Random(self.config.seed ^ 0x5EED)
        start = dt.datetime.combine(self.config.start_date, dt.time(12), UTC)
        n = 400
        return sum(len(pilot._session(start)) for _ in range(n)) / n

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _session(self, start: dt.datetime) -> list[dict]:
        """One session's events, in event-time order."""
        rng, funnel = self.rng, self.config.funnel
        user = rng.choice(self.users)
        profile = user.profile
        session_id = self._uuid()
        clock = start
        events: list[dict] = []

        def emit(event_type: str, **values) -> None:
            nonlocal clock
            events.append(
                {
                    "event_id": self._uuid(),
                    "event_type": event_type,
                    "event_time": clock,
                    "user_id": user.user_id,
                    "session_id": session_id,
                    **values,
                }
            )
            clock += dt.timedelta(seconds=round(rng.expovariate(1 / 25.0) + 2, 3))

        def page(page_type: str, url: str, product_id=None, category=None) -> None:
            emit(schema.PAGE_VIEW, page_type=page_type, page_url=url, product_id=product_id, category=category)

        device = "mobile" if rng.random() < profile.mobile_share else rng.choice(("desktop", "desktop", "tablet"))
        emit(
            schema.SESSION_START,
            device=device,
            referrer=rng.choices(schema.REFERRERS, (30, 35, 15, 10, 10))[0],
            country=user.country,
        )
        if rng.random() < funnel.home_first:
            page("home", "/")
        cart: dict[str, list] = {}
        for _ in range(max(1, round(rng.expovariate(1 / profile.views_mean)))):
            product = rng.choices(self.products, self.product_weights)[0]
            if rng.random() < funnel.category_view:
                page("category", f"/c/{product.category}", category=product.category)
            page("product", f"/p/{product.product_id}", product_id=product.product_id, category=product.category)
            if rng.random() < min(1.0, funnel.add_to_cart * profile.cart_mult):
                quantity = 1 + (rng.random() < profile.basket_extra)
                emit(schema.ADD_TO_CART, product_id=product.product_id, quantity=quantity, unit_price=product.price)
                line = cart.setdefault(product.product_id, [product, 0])
                line[1] += quantity
        if cart and rng.random() < funnel.view_cart:
            page("cart", "/cart")
            if rng.random() < funnel.checkout:
                page("checkout", "/checkout")
                if rng.random() < min(1.0, funnel.purchase * profile.purchase_mult):
                    order_id = f"o-{self._uuid()[:18]}"
                    payment = rng.choices(schema.PAYMENT_METHODS, (55, 20, 12, 8, 5))[0]
                    for product, quantity in cart.values():
                        discount = Decimal("0.00")
                        if rng.random() < funnel.discount:
                            discount = money(product.price * quantity * Decimal(rng.choice((5, 10, 15, 20, 25))) / 100)
                        emit(
                            schema.PURCHASE,
                            order_id=order_id,
                            product_id=product.product_id,
                            quantity=quantity,
                            unit_price=product.price,
                            discount=discount,
                            payment_method=payment,
                            currency="USD",
                        )
        emit(schema.SESSION_END)
        return events

    def _session_starts(self, day_start: dt.datetime, diurnal: bool) -> Iterator[dt.datetime]:
        """Session arrivals over 24 hours from `day_start`: a Poisson process, thinned (when
        `diurnal`) to a daily curve that peaks mid-afternoon and is quietest before dawn."""
        rng = self.rng
        accept_mean = 0.15 + 0.85 * 0.5 if diurnal else 1.0
        peak_rate = self.sessions_per_day / 86_400 / accept_mean
        t = 0.0
        while True:
            t += rng.expovariate(peak_rate)
            if t >= 86_400:
                return
            level = 0.5 * (1 - math.cos(2 * math.pi * (t / 3600 - 4) / 24))
            if not diurnal or rng.random() < 0.15 + 0.85 * level:
                yield day_start + dt.timedelta(seconds=round(t, 3))

    # -- faults and ordering ----------------------------------------------------------------

    def _records(self, event: dict) -> list[tuple[dt.datetime, int, Record]]:
        """The record(s) an event becomes, each with the (simulated) time it is sent."""
        config, rng = self.config, self.rng
        sent = event["event_time"] + dt.timedelta(seconds=round(rng.uniform(0.05, 2.0), 3))
        late = rng.random() < config.late_fraction
        if late:
            lateness = math.exp(rng.uniform(math.log(120), math.log(config.max_lateness_seconds)))
            sent = event["event_time"] + dt.timedelta(seconds=round(lateness, 3))
        event["ingest_time"] = sent
        event_type = event["event_type"]
        columns = schema.event_columns(event_type)
        topic = schema.EVENT_TOPIC[event_type]
        key = event["user_id"].encode()
        if rng.random() < config.malformed_fraction:
            value, reason = self._malform(event, columns)
            return [
                (sent, 0, Record(topic, key, value, MALFORMED, event_type, event["event_time"], sent, reason, late))
            ]
        value = encode(columns, event)
        out = [(sent, 0, Record(topic, key, value, VALID, event_type, event["event_time"], sent, None, late))]
        if rng.random() < config.duplicate_fraction:
            again = sent + dt.timedelta(seconds=round(rng.uniform(0.5, 30.0), 3))
            out.append(
                (again, 1, Record(topic, key, value, DUPLICATE, event_type, event["event_time"], sent, None, late))
            )
        return out

    def _malform(self, event: dict, columns) -> tuple[bytes, str]:
        rng = self.rng
        body = {c.name: schema.to_json_value(c.type, event.get(c.name)) for c in columns if c.name in event}
        choices = [schema.REASON_BAD_JSON, schema.REASON_MISSING_FIELD, schema.REASON_BAD_TYPE]
        if "unit_price" in body:
            choices.append(schema.REASON_OUT_OF_RANGE)
        reason = rng.choice(choices)
        if reason == schema.REASON_BAD_JSON:
            text = json.dumps(body, separators=(",", ":"))
            return text[: rng.randint(1, len(text) - 2)].encode(), reason
        if reason == schema.REASON_MISSING_FIELD:
            # event_id stays so the record can still be traced; any other required field goes.
            droppable = [c.name for c in columns if c.required and c.name != "event_id"]
            del body[rng.choice(droppable)]
        elif reason == schema.REASON_BAD_TYPE:
            if "quantity" in body:
                body["quantity"] = "three"
            else:
                body["event_time"] = "yesterday afternoon"
        else:
            body["unit_price"] = -abs(body["unit_price"])
        return json.dumps(body, separators=(",", ":")).encode(), reason

    def records(self, live_from: dt.datetime | None = None) -> Iterator[Record]:
        """Every record in the order they are sent: by send time, so a late event really does
        arrive after later ones. Simulated days from `start_date`, or, given `live_from`, an
        endless flat-rate stream of 24-hour stretches starting then."""
        config = self.config
        pending: list[tuple[dt.datetime, int, int, Record]] = []
        seq = 0
        if live_from is None:
            stretches = (
                (dt.datetime.combine(config.start_date + dt.timedelta(days=i), dt.time(), UTC), True)
                for i in range(config.days)
            )
        else:
            stretches = ((live_from + dt.timedelta(days=i), False) for i in itertools.count())
        for day_start, diurnal in stretches:
            for start in self._session_starts(day_start, diurnal):
                # Nothing still pending can be sent after a session that starts now.
                while pending and pending[0][0] < start:
                    yield heapq.heappop(pending)[3]
                for event in self._session(start):
                    for sent, order, record in self._records(event):
                        seq += 1
                        heapq.heappush(pending, (sent, order, seq, record))
        while pending:
            yield heapq.heappop(pending)[3]

    def catalog(self) -> list[Record]:
        updated = dt.datetime.combine(self.config.start_date, dt.time(), UTC)
        return catalog_records(self.products, updated)
