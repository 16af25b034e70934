"""Deterministic, realistic data for one simulated Klaviyo account.

`World` holds everything the store serves. Small collections (campaigns, flows, lists, ...) are
lists of `Row`s whose attributes are rendered once. The two big ones are column-wise:
profiles are four int arrays plus a sparse dict of edits, and events are five int arrays
(time, profile, metric, reference, episode). Their attributes are rendered per page from a few
pre-built property templates, so a million events cost tens of megabytes, not gigabytes.

Everything is derived from `random.Random` streams seeded from `seed` and from `mix64` hashes of
record indexes (never Python's salted `hash`), so the same seed, sizes and anchor give the same
bytes.
"""

from __future__ import annotations

import random
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

from klaviyo_source.sandbox.ids import Affine, Base62, Numeric, Ulid, code32, event_id, mix64, uuid_like

DAY = 86_400
YEAR = 365 * DAY
NO_TIME = -1  # "no value" in int time columns (profiles without events)


@dataclass
class Sizes:
    """Record counts; the defaults are small enough for unit tests."""

    events: int = 2000
    profiles: int = 300
    lists: int = 4
    segments: int = 4
    members_per_list: int = 50
    members_per_segment: int = 50
    campaigns: int = 12
    flows: int = 4
    actions_per_flow: int = 3
    messages_per_action: int = 1
    templates: int = 15
    tags: int = 8
    catalog_items: int = 30
    variants_per_item: int = 2
    catalog_categories: int = 5
    coupons: int = 3
    codes_per_coupon: int = 20


_DAY_TEXT: dict[int, str] = {}
_HOURS = [f"{h:02d}" for h in range(24)]
_MINUTES_SECONDS = [f"{m:02d}:{s:02d}" for m in range(60) for s in range(60)]


def iso(ts: int | None) -> str | None:
    """Epoch seconds -> Klaviyo's `2024-05-01T12:00:00+00:00`, from cached pieces (it runs per event)."""
    if ts is None or ts == NO_TIME:
        return None
    day, sec = divmod(ts, DAY)
    text = _DAY_TEXT.get(day)
    if text is None:
        text = _DAY_TEXT[day] = time.strftime("%Y-%m-%d", time.gmtime(day * DAY))
    hours, rest = divmod(sec, 3600)
    return f"{text}T{_HOURS[hours]}:{_MINUTES_SECONDS[rest]}+00:00"


def pick(seq: tuple[Any, ...] | list[Any], h: int) -> Any:
    return seq[h % len(seq)]


# ---------------------------------------------------------------------------------------------
# Vocabularies
# ---------------------------------------------------------------------------------------------

FIRST_NAMES = (
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Elijah", "Sophia", "Mateo", "Isabella", "Lucas",
    "Mia", "Levi", "Amelia", "Asher", "Harper", "James", "Evelyn", "Leo", "Luna", "Grayson",
    "Camila", "Ezra", "Gianna", "Hudson", "Aria", "Kai", "Nora", "Jack", "Zoe", "Aiden",
    "Priya", "Wei", "Fatima", "Diego", "Hana", "Omar", "Ingrid", "Tomás", "Aisha", "Sven",
    "Chloé", "Yuki", "Mei", "Rafael", "Anika", "Zara", "Owen", "Maya", "Ethan", "Lila",
)
LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore",
    "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Lewis",
    "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Nguyen", "Hill", "Flores",
    "Patel", "Kim", "O'Brien", "Müller", "Rossi", "Dubois", "Tanaka", "Kowalski", "Silva", "Novak",
)
EMAIL_DOMAINS = (
    "gmail.com", "gmail.com", "gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "icloud.com",
    "aol.com", "proton.me", "comcast.net", "me.com", "live.com",
)
# city, region, country, zip prefix, timezone, latitude, longitude, phone country code, locale
CITIES = (
    ("New York", "New York", "United States", "100", "America/New_York", 40.7128, -74.006, "1", "en-US"),
    ("Brooklyn", "New York", "United States", "112", "America/New_York", 40.6782, -73.9442, "1", "en-US"),
    ("Boston", "Massachusetts", "United States", "021", "America/New_York", 42.3601, -71.0589, "1", "en-US"),
    ("Chicago", "Illinois", "United States", "606", "America/Chicago", 41.8781, -87.6298, "1", "en-US"),
    ("Austin", "Texas", "United States", "787", "America/Chicago", 30.2672, -97.7431, "1", "en-US"),
    ("Denver", "Colorado", "United States", "802", "America/Denver", 39.7392, -104.9903, "1", "en-US"),
    ("Seattle", "Washington", "United States", "981", "America/Los_Angeles", 47.6062, -122.3321, "1", "en-US"),
    ("Portland", "Oregon", "United States", "972", "America/Los_Angeles", 45.5152, -122.6784, "1", "en-US"),
    ("San Francisco", "California", "United States", "941", "America/Los_Angeles", 37.7749, -122.4194,
     "1", "en-US"),
    ("Los Angeles", "California", "United States", "900", "America/Los_Angeles", 34.0522, -118.2437,
     "1", "en-US"),
    ("Atlanta", "Georgia", "United States", "303", "America/New_York", 33.749, -84.388, "1", "en-US"),
    ("Miami", "Florida", "United States", "331", "America/New_York", 25.7617, -80.1918, "1", "en-US"),
    ("Minneapolis", "Minnesota", "United States", "554", "America/Chicago", 44.9778, -93.265, "1", "en-US"),
    ("Nashville", "Tennessee", "United States", "372", "America/Chicago", 36.1627, -86.7816, "1", "en-US"),
    ("Phoenix", "Arizona", "United States", "850", "America/Phoenix", 33.4484, -112.074, "1", "en-US"),
    ("Toronto", "Ontario", "Canada", "M5V", "America/Toronto", 43.6532, -79.3832, "1", "en-CA"),
    ("Vancouver", "British Columbia", "Canada", "V6B", "America/Vancouver", 49.2827, -123.1207, "1", "en-CA"),
    ("London", "England", "United Kingdom", "SW1", "Europe/London", 51.5072, -0.1276, "44", "en-GB"),
    ("Manchester", "England", "United Kingdom", "M1 ", "Europe/London", 53.4808, -2.2426, "44", "en-GB"),
    ("Dublin", "Leinster", "Ireland", "D02", "Europe/Dublin", 53.3498, -6.2603, "353", "en-IE"),
    ("Berlin", "Berlin", "Germany", "101", "Europe/Berlin", 52.52, 13.405, "49", "de-DE"),
    ("Paris", "Île-de-France", "France", "750", "Europe/Paris", 48.8566, 2.3522, "33", "fr-FR"),
    ("Sydney", "New South Wales", "Australia", "200", "Australia/Sydney", -33.8688, 151.2093, "61", "en-AU"),
    ("Melbourne", "Victoria", "Australia", "300", "Australia/Melbourne", -37.8136, 144.9631, "61", "en-AU"),
)
STREETS = (
    "Maple", "Oak", "Cedar", "Elm", "Pine", "Washington", "Lake", "Hill", "Park", "Main", "Church",
    "Highland", "Sunset", "River", "Willow", "Mill", "Spring", "Ridge", "Walnut", "Chestnut",
)
STREET_KINDS = ("St", "Ave", "Rd", "Blvd", "Ln", "Dr", "Ct", "Way")
JOB_TITLES = (
    "Marketing Manager", "Software Engineer", "Teacher", "Nurse", "Designer", "Product Manager",
    "Accountant", "Student", "Consultant", "Small Business Owner", "Photographer", "Chef",
)
COMPANIES = (
    "Acme Corp", "Globex", "Initech", "Umbrella Health", "Stark Studio", "Hooli", "Vandelay Imports",
    "Wayne Logistics", "Soylent Foods", "Pied Piper",
)
LOYALTY_TIERS = ("Bronze", "Silver", "Gold", "Platinum")
SIGNUP_SOURCES = ("Footer Form", "Popup - 10% Off", "Checkout", "Instagram Giveaway", "In-Store", "Quiz")
INTERESTS = ("Outerwear", "Knitwear", "Footwear", "Bags", "Home", "Accessories", "Sale", "New Arrivals")


@dataclass(frozen=True)
class Brand:
    name: str
    domain: str
    sku: str
    industry: str
    timezone: str
    street: str
    city: str
    region: str
    zip: str
    currency: str


BRANDS = (
    Brand("Northwind Outfitters", "northwindoutfitters.com", "NWO", "Apparel & Accessories",
          "America/New_York", "410 Congress St", "Portland", "Maine", "04101", "USD"),
    Brand("Juniper & Finch", "juniperandfinch.com", "JNF", "Home & Garden",
          "America/Los_Angeles", "88 Alder Way", "Oakland", "California", "94607", "USD"),
    Brand("Copperleaf Goods", "copperleafgoods.com", "CLG", "Apparel & Accessories",
          "America/Chicago", "1200 W Fulton Market", "Chicago", "Illinois", "60607", "USD"),
)

MATERIALS = ("Merino", "Organic Cotton", "Waxed Canvas", "Alpaca", "Recycled Nylon", "Linen")
# noun, category, base price
GOODS = (
    ("Crew Sweater", "Knitwear", 98.0), ("Beanie", "Accessories", 32.0), ("Tote Bag", "Bags", 58.0),
    ("Rain Jacket", "Outerwear", 185.0), ("Trail Runner", "Footwear", 140.0),
    ("Throw Blanket", "Home", 120.0), ("Scarf", "Accessories", 45.0), ("Daypack", "Bags", 110.0),
    ("Quarter-Zip", "Knitwear", 89.0), ("Chore Coat", "Outerwear", 210.0), ("Slip-On", "Footwear", 95.0),
    ("Pillow Cover", "Home", 39.0),
)
COLORS = ("Navy", "Charcoal", "Oat", "Forest", "Rust", "Black", "Sand", "Sky")
VARIANT_SIZES = ("XS", "S", "M", "L", "XL", "One Size")
CATEGORY_NAMES = ("Outerwear", "Knitwear", "Footwear", "Bags", "Home", "Accessories", "New Arrivals", "Sale",
                  "Gifts Under $50", "Best Sellers")

LIST_NAMES = (
    "Newsletter", "VIP Customers", "SMS Subscribers", "Sample Data List", "Preview List",
    "Back in Stock Waitlist", "Holiday Gift Guide Signups", "Wholesale Leads", "Instagram Giveaway 2024",
    "Loyalty Members",
)
# segment name and the definition condition it describes
SEGMENT_NAMES = (
    "Engaged (90 Days)", "Repeat Buyers", "Lapsed Customers (180 Days)", "High AOV",
    "Never Purchased", "Cart Abandoners (30 Days)", "Unengaged (365 Days)", "VIP - Top 10%",
)
CAMPAIGN_THEMES = (
    "Spring Collection Launch", "Mother's Day Gift Guide", "Summer Sale - 20% Off", "New Arrivals",
    "Back to School", "Fall Layering Edit", "Black Friday Early Access", "Cyber Monday Final Hours",
    "Holiday Shipping Deadline", "New Year Reset", "Valentine's Day Picks", "Restock Alert",
    "Customer Favorites", "Last Chance: Winter Clearance", "Members-Only Preview", "Weekend Flash Sale",
)
FLOW_NAMES = (
    "Welcome Series", "Abandoned Cart Reminder", "Browse Abandonment", "Post-Purchase Thank You",
    "Win-Back", "Birthday Reward", "Back in Stock", "Price Drop Alert", "Sunset Unengaged",
    "Review Request",
)
TAG_NAMES = (
    "Promotional", "Seasonal", "Welcome", "Retention", "VIP", "Holiday", "Product Launch", "SMS",
    "Evergreen", "Test", "Q4", "Loyalty",
)
TAG_GROUPS = ("Default", "Campaign Type")
COUPON_NAMES = ("WELCOME10", "SUMMER15", "VIP20", "BFCM25", "FREESHIP", "LOYALTY5", "BDAY15", "WINBACK20")
TEMPLATE_KINDS = (
    "Welcome Email", "Abandoned Cart", "Newsletter", "Product Launch", "Order Confirmation",
    "Win-Back Offer", "Holiday Promo", "Review Request",
)
EDITOR_TYPES = ("SYSTEM_DRAGGABLE", "SYSTEM_DRAGGABLE", "CODE", "USER_DRAGGABLE", "SIMPLE")
CAMPAIGN_STATUSES = (
    "Sent", "Sent", "Sent", "Sent", "Draft", "Sent", "Scheduled", "Sent", "Cancelled", "Sent",
    "Variations Sent", "Sent",
)
FLOW_TRIGGERS = ("Added to List", "Metric", "Metric", "Metric", "Date Based", "Price Drop", "Low Inventory")


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MetricDef:
    name: str
    integration: str  # key into INTEGRATIONS
    channel: str | None  # email / sms / push for message metrics


INTEGRATIONS = {
    "klaviyo": ("Klaviyo", "Internal"),
    "shopify": ("Shopify", "eCommerce"),
    "api": ("API", "API"),
}

METRICS = (
    MetricDef("Placed Order", "shopify", None),
    MetricDef("Ordered Product", "shopify", None),
    MetricDef("Started Checkout", "shopify", None),
    MetricDef("Fulfilled Order", "shopify", None),
    MetricDef("Viewed Product", "klaviyo", None),
    MetricDef("Active on Site", "klaviyo", None),
    MetricDef("Received Email", "klaviyo", "email"),
    MetricDef("Opened Email", "klaviyo", "email"),
    MetricDef("Clicked Email", "klaviyo", "email"),
    MetricDef("Bounced Email", "klaviyo", "email"),
    MetricDef("Marked Email as Spam", "klaviyo", "email"),
    MetricDef("Unsubscribed", "klaviyo", "email"),
    MetricDef("Received SMS", "klaviyo", "sms"),
    MetricDef("Clicked SMS", "klaviyo", "sms"),
    MetricDef("Failed to Deliver SMS", "klaviyo", "sms"),
    MetricDef("Unsubscribed from SMS Marketing", "klaviyo", "sms"),
    MetricDef("Received Push", "klaviyo", "push"),
    MetricDef("Opened Push", "klaviyo", "push"),
    MetricDef("Loyalty Points Earned", "api", None),
    MetricDef("Submitted Review", "api", None),
)
M = {m.name: i for i, m in enumerate(METRICS)}
PLACED_ORDER, ORDERED_PRODUCT, STARTED_CHECKOUT, FULFILLED_ORDER = (
    M["Placed Order"], M["Ordered Product"], M["Started Checkout"], M["Fulfilled Order"])
VIEWED_PRODUCT, ACTIVE_ON_SITE = M["Viewed Product"], M["Active on Site"]
LOYALTY, REVIEW = M["Loyalty Points Earned"], M["Submitted Review"]
# per channel: received, engaged (open/click), clicked, failed/bounced, unsubscribed
RECEIVED = {"email": M["Received Email"], "sms": M["Received SMS"], "push": M["Received Push"]}
ORDER_METRICS = frozenset({PLACED_ORDER, STARTED_CHECKOUT, FULFILLED_ORDER})
MESSAGE_METRICS = frozenset(i for i, m in enumerate(METRICS) if m.channel)


# ---------------------------------------------------------------------------------------------
# Rows of the small collections
# ---------------------------------------------------------------------------------------------

@dataclass
class Row:
    """One record of a small collection.

    attrs: the JSON-ready `attributes`. vals: filter/sort values by Klaviyo field name, datetimes as
    epoch seconds. refs: relationship name -> index (to-one) or list of indexes into the target table.
    extra: `additional-fields` attributes (e.g. a template's `definition`).
    """

    id: str
    attrs: dict[str, Any]
    vals: dict[str, Any]
    refs: dict[str, Any] = field(default_factory=dict)
    parent: int | None = None
    alive: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # attributes returned only on request


@dataclass
class Message:
    """A sendable message (campaign or flow) that events can reference; kept after deletion."""

    table: str  # "campaign_messages" or "flow_messages"
    row: int
    channel: str  # email / sms / push
    send_ts: int | None  # campaigns: when it went out; flows: None (sent continuously)
    props: dict[str, Any]  # event properties shared by every event about this message


@dataclass
class Product:
    """What order and product events say about a catalog item (snapshot at generation)."""

    props: dict[str, Any]  # Viewed Product style properties
    item: dict[str, Any]  # one entry of a Placed Order's `Items`
    price: float


class Columns:
    """Append-only int columns for the events table (one entry per event, by event index)."""

    def __init__(self) -> None:
        self.ts = array("q")  # epoch seconds
        self.profile = array("l")
        self.metric = array("b")
        self.ref = array("l")  # message index, order template, product, or item slot (per metric)
        self.episode = array("l")  # events of one visit/send share it; drives $event_id and send times


# ---------------------------------------------------------------------------------------------
# The world
# ---------------------------------------------------------------------------------------------

TABLES = (
    "metrics", "tag_groups", "tags", "lists", "segments", "templates", "catalog_categories",
    "catalog_items", "catalog_variants", "coupons", "coupon_codes", "campaigns", "campaign_messages",
    "flows", "flow_actions", "flow_messages", "accounts",
)


class World:
    """All data of one account; generation and the data-level half of every mutation."""

    def __init__(self, seed: int, sizes: Sizes, anchor: int, account_id: str) -> None:
        self.seed = seed
        self.sizes = sizes
        self.anchor = anchor
        self.account_id = account_id
        self.brand = BRANDS[seed % len(BRANDS)]
        self.rows: dict[str, list[Row]] = {name: [] for name in TABLES}
        self.messages: list[Message] = []
        self.products: list[Product] = []
        self.orders: list[dict[str, Any]] = []  # Placed Order property templates
        self.episodes = 0
        self.profile_ids = Ulid(seed * 31 + 1)
        self.profile_created = array("q")
        self.profile_updated = array("q")
        self.profile_last_event = array("q")
        self.profile_edits: dict[int, dict[str, Any]] = {}
        self.members: dict[str, list[dict[int, int]]] = {"list": [], "segment": []}
        self.events = Columns()
        self.codecs = {
            "metrics": Base62(seed * 31 + 2), "lists": Base62(seed * 31 + 3), "segments": Base62(seed * 31 + 4),
            "templates": Base62(seed * 31 + 5), "campaigns": Ulid(seed * 31 + 6),
            "campaign_messages": Ulid(seed * 31 + 7), "flows": Ulid(seed * 31 + 8),
            "flow_actions": Numeric(seed * 31 + 9, 8), "flow_messages": Numeric(seed * 31 + 10, 8),
        }
        self._rng = random.Random(seed * 1_000_003 + 17)
        self._generate()

    # -- helpers ---------------------------------------------------------------------------
    def ulid(self, table: str, i: int, ts: int) -> str:
        codec = self.codecs[table]
        assert isinstance(codec, Ulid)
        return codec.encode(i, ts * 1000 + mix64(i, self.seed) % 1000)

    def short_id(self, table: str, i: int) -> str:
        codec = self.codecs[table]
        assert isinstance(codec, (Base62, Numeric))
        return codec.encode(i)

    def live(self, table: str) -> list[int]:
        return [i for i, row in enumerate(self.rows[table]) if row.alive]

    def _add(self, table: str, row: Row) -> int:
        self.rows[table].append(row)
        return len(self.rows[table]) - 1

    def _past(self, rng: random.Random, max_age: int, min_age: int = 0) -> int:
        return self.anchor - rng.randint(min_age, max_age)

    def _tags_for(self, rng: random.Random) -> list[int]:
        tags = self.live("tags")
        if not tags or rng.random() < 0.2:
            return []
        return sorted(rng.sample(tags, min(len(tags), rng.choice((1, 1, 2)))))

    def from_address(self) -> str:
        return f"hello@{self.brand.domain}"

    # -- generation ------------------------------------------------------------------------
    def _generate(self) -> None:
        s, rng = self.sizes, self._rng
        self._gen_account()
        self._gen_metrics()
        self._gen_tags(s.tags)
        for _ in range(s.lists):
            self.add_list(self._past(rng, 3 * YEAR, 30 * DAY), rng)
        for i in range(s.segments):
            self.add_segment(self._past(rng, 2 * YEAR, 30 * DAY), rng, active=i != 2)
        for _ in range(s.templates):
            self.add_template(self._past(rng, 2 * YEAR, DAY), rng)
        self._gen_catalog()
        self._gen_profiles(s.profiles)
        self._gen_coupons()
        channels = ("email", "sms", "email", "mobile_push", "email", "sms", "email", "email")
        for i in range(s.campaigns):
            status = CAMPAIGN_STATUSES[i % len(CAMPAIGN_STATUSES)]
            self.add_campaign(channels[i % len(channels)], self._past(rng, YEAR, 2 * DAY), rng, status)
        for _ in range(s.flows):
            self.add_flow(self._past(rng, 2 * YEAR, 10 * DAY), rng)
        self._gen_members()
        self._gen_events(s.events)

    def _gen_account(self) -> None:
        b = self.brand
        attrs = {
            "test_account": False,
            "contact_information": {
                "default_sender_name": b.name,
                "default_sender_email": self.from_address(),
                "website_url": f"https://www.{b.domain}",
                "organization_name": b.name,
                "street_address": {"address1": b.street, "address2": None, "city": b.city, "region": b.region,
                                   "country": "US", "zip": b.zip},
            },
            "industry": b.industry,
            "timezone": b.timezone,
            "preferred_currency": b.currency,
            "public_api_key": self.account_id,
            "locale": "en-US",
        }
        self._add("accounts", Row(self.account_id, attrs, {"id": self.account_id}))

    def _gen_metrics(self) -> None:
        codec = Base62(self.seed * 31 + 11)
        for i, m in enumerate(METRICS):
            name, category = INTEGRATIONS[m.integration]
            integration = {"object": "integration", "id": codec.encode(list(INTEGRATIONS).index(m.integration)),
                           "key": m.integration, "name": name, "category": category}
            created = self.anchor - 3 * YEAR + i * 3 * DAY + mix64(i, self.seed) % DAY
            updated = created + mix64(i, self.seed + 1) % (2 * YEAR)
            attrs = {"name": m.name, "created": iso(created), "updated": iso(updated), "integration": integration}
            vals: dict[str, Any] = {"id": self.short_id("metrics", i), "integration.name": name,
                                    "integration.category": category, "created": created, "updated": updated}
            self._add("metrics", Row(vals["id"], attrs, vals))

    def _gen_tags(self, count: int) -> None:
        for g, name in enumerate(TAG_GROUPS):
            gid = uuid_like(g, self.seed * 31 + 12)
            attrs = {"name": name, "exclusive": g > 0, "default": g == 0}
            self._add("tag_groups", Row(gid, attrs, {"id": gid, "name": name}))
        for i in range(count):
            name = TAG_NAMES[i % len(TAG_NAMES)] + (f" {i // len(TAG_NAMES) + 1}" if i >= len(TAG_NAMES) else "")
            tid = uuid_like(i, self.seed * 31 + 13)
            self._add("tags", Row(tid, {"name": name}, {"id": tid, "name": name},
                                  {"tag-group": i % len(TAG_GROUPS)}))

    def add_list(self, created: int, rng: random.Random) -> int:
        i = len(self.rows["lists"])
        name = LIST_NAMES[i % len(LIST_NAMES)] + (f" {i // len(LIST_NAMES) + 1}" if i >= len(LIST_NAMES) else "")
        updated = min(self.anchor, created + rng.randint(0, YEAR))
        attrs = {"name": name, "created": iso(created), "updated": iso(updated),
                 "opt_in_process": "double_opt_in" if rng.random() < 0.3 else "single_opt_in"}
        vals: dict[str, Any] = {"id": self.short_id("lists", i), "name": name, "created": created, "updated": updated}
        self.members["list"].append({})
        return self._add("lists", Row(vals["id"], attrs, vals, {"tags": self._tags_for(rng)}))

    def add_segment(self, created: int, rng: random.Random, active: bool = True) -> int:
        i = len(self.rows["segments"])
        name = SEGMENT_NAMES[i % len(SEGMENT_NAMES)] + (
            f" {i // len(SEGMENT_NAMES) + 1}" if i >= len(SEGMENT_NAMES) else "")
        updated = min(self.anchor, created + rng.randint(0, YEAR))
        starred = rng.random() < 0.25
        attrs = {"name": name, "definition": self._segment_definition(i), "created": iso(created),
                 "updated": iso(updated), "is_active": active, "is_processing": False, "is_starred": starred}
        vals: dict[str, Any] = {"id": self.short_id("segments", i), "name": name, "created": created,
                                "updated": updated, "is_active": active, "is_starred": starred}
        self.members["segment"].append({})
        return self._add("segments", Row(vals["id"], attrs, vals, {"tags": self._tags_for(rng)}))

    def _segment_definition(self, i: int) -> dict[str, Any]:
        placed = self.short_id("metrics", PLACED_ORDER)
        opened = self.short_id("metrics", M["Opened Email"])
        timeframes = ({"type": "date", "operator": "in-the-last", "unit": "day", "quantity": 90},
                      {"type": "date", "operator": "alltime"},
                      {"type": "date", "operator": "in-the-last", "unit": "day", "quantity": 180})
        kind = i % 4
        if kind == 0:
            cond: dict[str, Any] = {"type": "profile-metric", "metric_id": opened, "measurement": "count",
                                    "measurement_filter": {"type": "numeric", "operator": "greater-than", "value": 0},
                                    "timeframe_filter": timeframes[0], "metric_filters": None}
        elif kind == 1:
            cond = {"type": "profile-metric", "metric_id": placed, "measurement": "count",
                    "measurement_filter": {"type": "numeric", "operator": "greater-than-or-equal", "value": 2},
                    "timeframe_filter": timeframes[1], "metric_filters": None}
        elif kind == 2:
            cond = {"type": "profile-property", "property": "properties['Loyalty Tier']",
                    "filter": {"type": "string", "operator": "equals", "value": "Gold"}}
        else:
            cond = {"type": "profile-marketing-consent",
                    "consent": {"channel": "email", "can_receive_marketing": True,
                                "consent_status": {"subscription": "subscribed", "filters": None}}}
        return {"condition_groups": [{"conditions": [cond]}]}

    def add_template(self, created: int, rng: random.Random) -> int:
        i = len(self.rows["templates"])
        kind = TEMPLATE_KINDS[i % len(TEMPLATE_KINDS)]
        name = f"{kind} - {rng.choice(('v1', 'v2', 'Hero', 'Minimal', 'Grid', '2024', '2025'))}"
        editor = EDITOR_TYPES[i % len(EDITOR_TYPES)]
        updated = min(self.anchor, created + rng.randint(0, 200 * DAY))
        html = _template_html(self.brand, kind, i)
        attrs = {"name": name, "editor_type": editor, "html": html,
                 "text": f"{kind}\n\n{self.brand.name} | https://www.{self.brand.domain}",
                 "amp": None, "created": iso(created), "updated": iso(updated)}
        vals: dict[str, Any] = {"id": self.short_id("templates", i), "name": name, "created": created,
                                "updated": updated}
        extra = {"definition": _template_definition(vals["id"])} if editor == "SYSTEM_DRAGGABLE" else {}
        return self._add("templates", Row(vals["id"], attrs, vals, extra=extra))

    def _gen_catalog(self) -> None:
        s, rng, b = self.sizes, self._rng, self.brand
        for c in range(s.catalog_categories):
            name = CATEGORY_NAMES[c % len(CATEGORY_NAMES)] + (
                f" {c // len(CATEGORY_NAMES) + 1}" if c >= len(CATEGORY_NAMES) else "")
            ext = "CAT-" + name.upper().replace(" ", "-").replace("$", "")
            created = self._past(rng, 3 * YEAR, YEAR)
            updated = self._past(rng, YEAR)
            cid = f"$custom:::$default:::{ext}"
            self._add("catalog_categories", Row(cid, {"external_id": ext, "name": name, "updated": iso(updated)},
                                                {"id": cid, "ids": cid, "name": name, "created": created}))
        categories = self.live("catalog_categories")
        # events need products even when the catalog is empty
        self.products = [self._product(k) for k in range(s.catalog_items or len(MATERIALS) * len(GOODS))]
        for k in range(s.catalog_items):
            p = self.products[k]
            created = self._past(rng, 3 * YEAR, 30 * DAY)
            updated = min(self.anchor, created + rng.randint(0, YEAR))
            ext = p.props["ProductID"]
            cats = sorted(rng.sample(categories, min(len(categories), rng.choice((1, 2))))) if categories else []
            attrs = {"external_id": ext, "title": p.props["ProductName"],
                     "description": f"The {p.props['ProductName']} - made to last, designed in-house by {b.name}.",
                     "price": p.price, "url": p.props["URL"], "image_full_url": p.props["ImageURL"],
                     "image_thumbnail_url": p.props["ImageURL"].replace(".jpg", "_thumb.jpg"),
                     "images": [p.props["ImageURL"], p.props["ImageURL"].replace(".jpg", "_2.jpg")],
                     "custom_metadata": {"material": p.props["Material"], "collection": p.props["Categories"][0]},
                     "published": rng.random() < 0.9, "created": iso(created), "updated": iso(updated)}
            iid = f"$custom:::$default:::{ext}"
            vals = {"id": iid, "ids": iid, "title": attrs["title"], "published": attrs["published"],
                    "created": created}
            item = self._add("catalog_items", Row(iid, attrs, vals, {"variants": [], "categories": cats}))
            for v in range(s.variants_per_item):
                self._add_variant(item, v, created, rng)

    def _product(self, k: int) -> Product:
        b = self.brand
        material = MATERIALS[k % len(MATERIALS)]
        noun, category, base = GOODS[(k // len(MATERIALS)) % len(GOODS)]
        edition = k // (len(MATERIALS) * len(GOODS))
        title = f"{material} {noun}" + (f" {edition + 1}" if edition else "")
        ext = f"{b.sku}-{1000 + k}"
        price = round(base * (1 + (mix64(k, self.seed) % 40) / 100), 0) - 0.01 * (k % 2)
        slug = title.lower().replace(" ", "-")
        props = {"ProductName": title, "ProductID": ext, "SKU": f"{ext}-{COLORS[k % len(COLORS)][:3].upper()}",
                 "Categories": [category], "ImageURL": f"https://cdn.{b.domain}/products/{slug}.jpg",
                 "URL": f"https://www.{b.domain}/products/{slug}", "Brand": b.name, "Price": price,
                 "CompareAtPrice": round(price * 1.25, 2), "Material": material}
        item = {"ProductID": ext, "SKU": props["SKU"], "ProductName": title, "Quantity": 1, "ItemPrice": price,
                "RowTotal": price, "ProductURL": props["URL"], "ImageURL": props["ImageURL"],
                "Categories": [category], "Brand": b.name}
        return Product(props, item, price)

    def _add_variant(self, item: int, v: int, created: int, rng: random.Random) -> int:
        parent = self.rows["catalog_items"][item]
        p = parent.attrs
        color = COLORS[(item + v) % len(COLORS)]
        size = VARIANT_SIZES[v % len(VARIANT_SIZES)]
        ext = f"{p['external_id']}-{size}-{color.upper()}"
        vid = f"$custom:::$default:::{ext}"
        title = f"{p['title']} - {color} / {size}"
        updated = min(self.anchor, created + rng.randint(0, YEAR))
        attrs = {"external_id": ext, "title": title, "description": p["description"], "sku": ext,
                 "inventory_policy": rng.choice((0, 0, 1, 2)), "inventory_quantity": rng.randint(0, 400),
                 "price": p["price"], "url": f"{p['url']}?variant={ext}", "image_full_url": p["image_full_url"],
                 "image_thumbnail_url": p["image_thumbnail_url"], "images": p["images"][:1],
                 "custom_metadata": {"color": color, "size": size}, "published": p["published"],
                 "created": iso(created), "updated": iso(updated)}
        vals = {"id": vid, "ids": vid, "sku": ext, "title": title, "published": p["published"],
                "created": created}
        idx = self._add("catalog_variants", Row(vid, attrs, vals, {"item": item}, parent=item))
        parent.refs["variants"].append(idx)
        return idx

    def _gen_coupons(self) -> None:
        s, rng = self.sizes, self._rng
        for c in range(s.coupons):
            ext = COUPON_NAMES[c % len(COUPON_NAMES)] + (str(c // len(COUPON_NAMES) + 1)
                                                          if c >= len(COUPON_NAMES) else "")
            attrs = {"external_id": ext,
                     "description": f"{ext[-2:] if ext[-2:].isdigit() else 'Free shipping'}"
                                    f"{'% off' if ext[-2:].isdigit() else ''} - unique codes for {ext.lower()}",
                     "monitor_configuration": {"low_balance_threshold": rng.choice((50, 100, 500))}}
            coupon = self._add("coupons", Row(ext, attrs, {"id": ext}, {"codes": []}))
            for _ in range(s.codes_per_coupon):
                self._add_code(coupon, self._past(rng, YEAR), rng)

    def _add_code(self, coupon: int, created: int, rng: random.Random) -> int:
        i = len(self.rows["coupon_codes"])
        ext = self.rows["coupons"][coupon].id
        code = code32(i, self.seed * 31 + 14)
        r = rng.random()
        status = ("UNASSIGNED" if r < 0.55 else "ASSIGNED_TO_PROFILE" if r < 0.8 else "USED" if r < 0.97
                  else "PROCESSING")
        n_profiles = len(self.profile_created)
        profile = rng.randrange(n_profiles) if status in ("ASSIGNED_TO_PROFILE", "USED") and n_profiles else None
        expires = created + YEAR
        cid = f"{ext}-{code}"
        attrs = {"unique_code": code, "expires_at": iso(expires), "status": status}
        vals = {"id": cid, "coupon.id": ext, "expires_at": expires, "status": status, "created": created}
        idx = self._add("coupon_codes", Row(cid, attrs, vals, {"coupon": coupon, "profile": profile}, parent=coupon))
        self.rows["coupons"][coupon].refs["codes"].append(idx)
        return idx

    # -- campaigns and flows -----------------------------------------------------------------
    def add_campaign(self, channel: str, created: int, rng: random.Random, status: str = "Draft",
                     updated: int | None = None) -> int:
        """A campaign and its message(s); `updated` defaults to a plausible time after creation."""
        i = len(self.rows["campaigns"])
        theme = CAMPAIGN_THEMES[i % len(CAMPAIGN_THEMES)]
        label = {"email": "Email", "sms": "SMS", "mobile_push": "Push"}[channel]
        name = f"{theme} ({label})" + (f" #{i // len(CAMPAIGN_THEMES) + 1}" if i >= len(CAMPAIGN_THEMES) else "")
        sent = status in ("Sent", "Variations Sent")
        send_ts: int | None = None
        scheduled: int | None = None
        if sent:
            send_ts = min(self.anchor - 3600, created + rng.randint(DAY, 5 * DAY))
            scheduled = send_ts - rng.randint(3600, 2 * DAY)
        elif status == "Scheduled":
            send_ts = self.anchor + rng.randint(DAY, 20 * DAY)
            scheduled = created + rng.randint(3600, DAY)
        elif status == "Cancelled":
            scheduled = created + rng.randint(3600, DAY)
        if updated is None:
            updated = (send_ts or created) + rng.randint(60, 3600) if sent else min(
                self.anchor, created + rng.randint(0, DAY))
        ab = status == "Variations Sent"
        if ab:
            strategy: dict[str, Any] = {"method": "ab_test_campaign"}
        elif send_ts is None:
            strategy = {"method": "immediate"}
        elif rng.random() < 0.2:
            strategy = {"method": "smart_send_time", "date": iso(send_ts)[:10]}  # type: ignore[index]
        elif rng.random() < 0.15:
            strategy = {"method": "throttled", "datetime": iso(send_ts), "throttle_percentage": 20}
        else:
            strategy = {"method": "static", "datetime": iso(send_ts),
                        "options": {"is_local": False}}
        audiences = self._audiences(rng)
        tracking: dict[str, Any] | None
        if channel == "email":
            tracking = {"add_tracking_params": True, "is_tracking_clicks": True, "is_tracking_opens": True,
                        "custom_tracking_params": [
                            {"type": "dynamic", "value": "campaign_name", "name": "utm_campaign"},
                            {"type": "static", "value": "klaviyo", "name": "utm_source"}]}
        elif channel == "sms":
            tracking = {"add_tracking_params": rng.random() < 0.5, "custom_tracking_params": None}
        else:
            tracking = None
        archived = sent and rng.random() < 0.1
        attrs = {"name": name, "status": status, "archived": archived, "audiences": audiences,
                 "send_options": {"use_smart_sending": rng.random() < 0.8}, "tracking_options": tracking,
                 "send_strategy": strategy, "created_at": iso(created), "scheduled_at": iso(scheduled),
                 "updated_at": iso(updated), "send_time": iso(send_ts)}
        cid = self.ulid("campaigns", i, created)
        vals = {"id": cid, "name": name, "status": status, "archived": archived, "messages.channel": channel,
                "created_at": created, "scheduled_at": scheduled, "updated_at": updated}
        campaign = self._add("campaigns", Row(cid, attrs, vals, {"campaign-messages": [],
                                                                 "tags": self._tags_for(rng)}))
        for variation in range(2 if ab else 1):
            self._add_campaign_message(campaign, channel, variation, created, updated, send_ts if sent else None,
                                       send_ts, rng)
        return campaign

    def _audiences(self, rng: random.Random) -> dict[str, Any]:
        lists = [self.rows["lists"][i].id for i in self.live("lists")]
        segments = [self.rows["segments"][i].id for i in self.live("segments")]
        pool = lists + segments
        included = sorted(rng.sample(pool, min(len(pool), rng.choice((1, 1, 2))))) if pool else []
        rest = [x for x in segments if x not in included]
        excluded = [rng.choice(rest)] if rest and rng.random() < 0.3 else []
        return {"included": included, "excluded": excluded}

    def _add_campaign_message(self, campaign: int, channel: str, variation: int, created: int, updated: int,
                              sent_ts: int | None, send_ts: int | None, rng: random.Random) -> int:
        i = len(self.rows["campaign_messages"])
        crow = self.rows["campaigns"][campaign]
        name = crow.attrs["name"]
        label = f"{name} - Variation {'AB'[variation]}" if crow.attrs["send_strategy"]["method"] == \
            "ab_test_campaign" else name
        templates = self.live("templates")
        template = rng.choice(templates) if templates and channel == "email" else None
        subject = _subject(name, variation)
        definition: dict[str, Any]
        if channel == "email":
            definition = {"channel": "email", "label": label, "content": {
                "subject": subject, "preview_text": f"{self.brand.name}: don't miss it",
                "from_email": self.from_address(), "from_label": self.brand.name,
                "reply_to_email": f"support@{self.brand.domain}", "cc_email": None, "bcc_email": None}}
        elif channel == "sms":
            definition = {"channel": "sms", "content": {
                "body": f"{self.brand.name}: {subject} Shop now: https://{self.brand.domain[:8]}.co/s/{i} "
                        f"Reply STOP to opt out", "media_url": None},
                "render_options": {"shorten_links": True, "add_org_prefix": True, "add_info_link": True,
                                   "add_opt_out_language": False}}
        else:
            definition = {"channel": "mobile_push", "notification_type": "standard",
                          "content": {"title": self.brand.name, "body": subject, "dynamic_image": None,
                                      "action_buttons": None},
                          "kv_pairs": {"campaign": name[:20]},
                          "options": {"on_open": {"type": "open_app"}, "badge": {"display": False},
                                      "play_sound": True}}
        send_times = [{"datetime": iso(send_ts), "is_local": False}] if send_ts else []
        attrs = {"definition": definition, "send_times": send_times, "created_at": iso(created),
                 "updated_at": iso(updated)}
        mid = self.ulid("campaign_messages", i, created + variation)
        idx = self._add("campaign_messages", Row(mid, attrs, {"id": mid, "created_at": created, "updated_at": updated},
                                                 {"campaign": campaign, "template": template, "image": None},
                                                 parent=campaign))
        crow.refs["campaign-messages"].append(idx)
        short = "push" if channel == "mobile_push" else channel
        props: dict[str, Any] = {"Campaign Name": name, "$message": mid, "$message_interaction": mid,
                                 "$variation": mid}
        if short == "email":
            props["Subject"] = subject
        props["$_cohort$message_send_cohort"] = f"{sent_ts}:{crow.id}" if sent_ts else None
        self.messages.append(Message("campaign_messages", idx, short, sent_ts, props))
        return idx

    def add_flow(self, created: int, rng: random.Random, updated: int | None = None) -> int:
        """A flow with its actions and messages; `updated` defaults to a plausible later time."""
        i = len(self.rows["flows"])
        name = FLOW_NAMES[i % len(FLOW_NAMES)] + (f" {i // len(FLOW_NAMES) + 1}" if i >= len(FLOW_NAMES) else "")
        trigger = FLOW_TRIGGERS[i % len(FLOW_TRIGGERS)]
        lists = self.live("lists")
        if trigger == "Added to List" and not lists:
            trigger = "Metric"
        source = ("lists", rng.choice(lists)) if trigger == "Added to List" else (
            ("metrics", rng.choice((PLACED_ORDER, STARTED_CHECKOUT, VIEWED_PRODUCT))) if trigger == "Metric" else None)
        status = rng.choice(("live", "live", "live", "draft", "manual"))
        archived = status != "live" and rng.random() < 0.3
        if updated is None:
            updated = min(self.anchor, created + rng.randint(0, 300 * DAY))
        attrs = {"name": name, "status": status, "archived": archived, "created": iso(created),
                 "updated": iso(updated), "trigger_type": trigger}
        fid = self.ulid("flows", i, created)
        vals = {"id": fid, "name": name, "status": status, "archived": archived, "created": created,
                "updated": updated, "trigger_type": trigger, "trigger": source}
        flow = self._add("flows", Row(fid, attrs, vals, {"flow-actions": [], "tags": self._tags_for(rng)}))
        channel = ("email", "email", "sms", "push")[i % 4]
        actions = [self._new_action(flow, k, channel, created, status, rng) for k in range(self.sizes.actions_per_flow)]
        for k, a in enumerate(actions):
            nxt = self.rows["flow_actions"][actions[k + 1]].id if k + 1 < len(actions) else None
            self.rows["flow_actions"][a].attrs["definition"]["links"] = {"next": nxt}
        return flow

    def _new_action(self, flow: int, k: int, channel: str, created: int, flow_status: str,
                    rng: random.Random) -> int:
        i = len(self.rows["flow_actions"])
        aid = self.short_id("flow_actions", i)
        frow = self.rows["flows"][flow]
        a_created = created + k
        updated = min(frow.vals["updated"], max(a_created, frow.vals["updated"] - rng.randint(0, DAY)))
        status = "live" if flow_status == "live" else rng.choice(("draft", "manual"))
        if k % 2 == 1:
            kind = "time-delay"
            definition: dict[str, Any] = {"id": aid, "type": kind, "links": {"next": None}, "data": {
                "unit": rng.choice(("days", "hours")), "value": rng.choice((1, 2, 3, 4)), "secondary_value": None,
                "timezone": "profile", "delay_until_time": None, "delay_until_weekdays": None}}
        else:
            kind = {"email": "send-email", "sms": "send-sms", "push": "send-mobile-push"}[
                channel if k == 0 else rng.choice(("email", "email", channel))]
            definition = {"id": aid, "type": kind, "links": {"next": None}, "data": {"message": None,
                                                                                     "status": status}}
        attrs = {"created": iso(a_created), "updated": iso(updated), "definition": definition}
        # only send actions carry a status (in `definition.data`); filters see what clients see
        vals = {"id": aid, "action_type": kind, "status": None if kind == "time-delay" else status,
                "created": a_created, "updated": updated}
        action = self._add("flow_actions", Row(aid, attrs, vals, {"flow": flow, "flow-messages": []}, parent=flow))
        frow.refs["flow-actions"].append(action)
        if kind != "time-delay":
            for m in range(self.sizes.messages_per_action):
                msg = self._add_flow_message(action, kind, m, a_created, updated, rng)
                if m == 0:
                    definition["data"]["message"] = self.rows["flow_messages"][msg].attrs["definition"]
        return action

    def _add_flow_message(self, action: int, kind: str, m: int, created: int, updated: int,
                          rng: random.Random) -> int:
        i = len(self.rows["flow_messages"])
        mid = self.short_id("flow_messages", i)
        arow = self.rows["flow_actions"][action]
        frow = self.rows["flows"][arow.parent]  # type: ignore[index]
        flow_name = frow.attrs["name"]
        name = f"{flow_name} - {'Email' if kind == 'send-email' else 'SMS' if kind == 'send-sms' else 'Push'} " \
               f"#{len(frow.refs['flow-actions'])}" + (f" ({'ABCDEFGH'[m % 8]})" if m else "")
        templates = self.live("templates")
        template = rng.choice(templates) if templates and kind == "send-email" else None
        subject = _subject(flow_name, m)
        channel = {"send-email": "email", "send-sms": "sms", "send-mobile-push": "push"}[kind]
        definition: dict[str, Any]
        if channel == "email":
            definition = {"from_email": self.from_address(), "from_label": self.brand.name,
                          "reply_to_email": None, "cc_email": None, "bcc_email": None, "subject_line": subject,
                          "preview_text": "A little something for you",
                          "template_id": self.rows["templates"][template].id if template is not None else None,
                          "smart_sending_enabled": True, "transactional": False, "add_tracking_params": True,
                          "custom_tracking_params": [{"param": "utm_source", "value": "klaviyo"}],
                          "additional_filters": None, "name": name, "id": mid}
        elif channel == "sms":
            definition = {"body": f"{self.brand.name}: {subject} Reply STOP to opt out", "image_id": None,
                          "dynamic_image": None, "message_hierarchy": None, "shorten_links": True,
                          "include_contact_card": False, "add_org_prefix": True, "add_info_link": True,
                          "add_opt_out_language": False, "smart_sending_enabled": True,
                          "sms_quiet_hours_enabled": True, "transactional": False, "add_tracking_params": False,
                          "custom_tracking_params": None, "template_id": None, "additional_filters": None,
                          "name": name, "id": mid}
        else:
            definition = {"title": self.brand.name, "body": subject, "sound": True, "badge": False,
                          "on_open": "home", "push_type": "standard", "kv_pairs": None,
                          "smart_sending_enabled": True, "additional_filters": None, "action_buttons": None,
                          "name": name, "id": mid}
        attrs = {"channel": channel, "created": iso(created), "updated": iso(updated), "definition": definition}
        vals = {"id": mid, "name": name, "created": created, "updated": updated}
        idx = self._add("flow_messages", Row(mid, attrs, vals, {"flow-action": action, "template": template},
                                             parent=action))
        arow.refs["flow-messages"].append(idx)
        props: dict[str, Any] = {"Campaign Name": name, "$flow": frow.id, "$message": mid,
                                 "$message_interaction": mid, "$variation": mid}
        if channel == "email":
            props["Subject"] = subject
        self.messages.append(Message("flow_messages", idx, channel, None, props))
        return idx

    # -- profiles -----------------------------------------------------------------------------
    def _gen_profiles(self, count: int) -> None:
        rng = random.Random(self.seed * 7 + 3)
        r = rng.random
        ages = sorted((int(4 * YEAR * r() ** 1.8) for _ in range(count)), reverse=True)
        created = array("q", (self.anchor - DAY - a for a in ages))
        self.profile_created = created
        self.profile_updated = array("q", (c + int((self.anchor - c) * r() ** 3) for c in created))
        self.profile_last_event = array("q", [NO_TIME]) * count

    def add_profiles(self, count: int, now: int) -> list[int]:
        start = len(self.profile_created)
        self.profile_created.extend([now] * count)
        self.profile_updated.extend([now] * count)
        self.profile_last_event.extend([NO_TIME] * count)
        return list(range(start, start + count))

    def edit_profile(self, i: int, now: int, rng: random.Random) -> None:
        """Bump `updated` and change something a person would change."""
        edits = self.profile_edits.setdefault(i, {"properties": {}})
        edits["properties"]["Loyalty Points"] = rng.randint(0, 5000)
        edits["properties"]["Last Profile Update"] = iso(now)
        if rng.random() < 0.5:
            edits["title"] = rng.choice(JOB_TITLES)
        self.profile_updated[i] = max(now, self.profile_updated[i])

    def _gen_members(self) -> None:
        rng = random.Random(self.seed * 7 + 5)
        n = len(self.profile_created)
        for kind, per in (("list", self.sizes.members_per_list), ("segment", self.sizes.members_per_segment)):
            table = "lists" if kind == "list" else "segments"
            for g, members in enumerate(self.members[kind]):
                start = self.rows[table][g].vals["created"]
                for p in rng.sample(range(n), min(n, per)):
                    earliest = max(start, self.profile_created[p])
                    members[p] = earliest + int((self.anchor - earliest) * rng.random())

    # -- events -------------------------------------------------------------------------------
    def _gen_events(self, count: int) -> None:
        """Generate visits and message sends, then sort all events by time (ties keep generation order)."""
        n_profiles = len(self.profile_created)
        if count <= 0 or n_profiles == 0:
            return
        self._build_order_templates()
        rng = random.Random(self.seed * 7 + 11)
        r = rng.random
        expo = rng.expovariate
        active = Affine(n_profiles, self.seed * 7 + 13)
        anchor = self.anchor
        ts: list[int] = []
        prof: list[int] = []
        met: list[int] = []
        ref: list[int] = []
        epi: list[int] = []
        campaign_msgs = [m for m, msg in enumerate(self.messages) if msg.send_ts is not None]
        flow_msgs = [m for m, msg in enumerate(self.messages) if msg.table == "flow_messages"]
        n_products = len(self.products)
        n_orders = len(self.orders)

        def base_time() -> int:
            x = r()
            if x < 0.012:
                return anchor - YEAR - int(4 * YEAR * r())  # backfilled history
            if x < 0.019:
                return anchor + 60 + int(YEAR * r())  # future-dated by a client clock or a bad import
            return anchor - int(YEAR * r())

        while len(ts) < count:
            episode = self.episodes
            self.episodes += 1
            p = active.enc(int(n_profiles * r() ** 1.6))
            x = r()
            out: list[tuple[int, int, int]] = []  # (time, metric, ref)
            if (x < 0.42 and campaign_msgs) or (x < 0.6 and flow_msgs):
                if x < 0.42 and campaign_msgs:
                    m = campaign_msgs[int(r() * len(campaign_msgs))]
                    t0 = self.messages[m].send_ts + int(expo(1 / 90))  # type: ignore[operator]
                else:
                    m = flow_msgs[int(r() * len(flow_msgs))]
                    t0 = base_time()
                self._message_episode(out, m, t0, r, expo)
            elif x < 0.94:
                t0 = base_time()
                out.append((t0, ACTIVE_ON_SITE, 0))
                t = t0
                for _ in range(1 + int(r() * 3)):
                    t += int(expo(1 / 45))
                    out.append((t, VIEWED_PRODUCT, int(r() * n_products)))
                if r() < 0.25:
                    t += int(expo(1 / 300))
                    order = int(r() * n_orders)
                    out.append((t, STARTED_CHECKOUT, order))
                    if r() < 0.55:
                        self._order(out, t + int(expo(1 / 400)), order, r)
            else:
                out.append((base_time(), LOYALTY if r() < 0.6 else REVIEW, int(r() * 1000)))
            if out[0][0] <= anchor:  # follow-ups of a past visit or send have not happened yet
                out = [e for e in out if e[0] <= anchor]
            for t, metric, reference in out[: count - len(ts)]:
                ts.append(t)
                prof.append(p)
                met.append(metric)
                ref.append(reference)
                epi.append(episode)
        by_time = sorted(range(count), key=ts.__getitem__)
        ev = self.events
        ev.ts = array("q", [ts[i] for i in by_time])
        ev.profile = array("l", [prof[i] for i in by_time])
        ev.metric = array("b", [met[i] for i in by_time])
        ev.ref = array("l", [ref[i] for i in by_time])
        ev.episode = array("l", [epi[i] for i in by_time])
        last = self.profile_last_event
        for p, t in zip(ev.profile, ev.ts, strict=True):
            last[p] = t  # ascending times: the final write is the latest

    def _message_episode(self, out: list[tuple[int, int, int]], m: int, t0: int, r: Any, expo: Any) -> None:
        """A message reaching one person: delivery, engagement, maybe an attributed order."""
        channel = self.messages[m].channel
        rec = RECEIVED[channel]
        if channel == "email":
            if r() < 0.015:
                out.append((t0, M["Bounced Email"], m))
                return
            out.append((t0, rec, m))
            if r() < 0.38:
                t = t0 + int(expo(1 / 5400))
                out.append((t, M["Opened Email"], m))
                if r() < 0.25:
                    out.append((t + int(expo(1 / 20000)), M["Opened Email"], m))
                if r() < 0.28:
                    t += int(expo(1 / 600))
                    out.append((t, M["Clicked Email"], m))
                    if r() < 0.15:  # a purchase soon after the click (attribution: see attribution.py)
                        self._order(out, t + int(expo(1 / 1800)), int(r() * len(self.orders)), r)
                if r() < 0.01:
                    out.append((t + 30, M["Unsubscribed"], m))
                elif r() < 0.002:
                    out.append((t + 20, M["Marked Email as Spam"], m))
        elif channel == "sms":
            if r() < 0.03:
                out.append((t0, M["Failed to Deliver SMS"], m))
                return
            out.append((t0, rec, m))
            if r() < 0.09:
                t = t0 + int(expo(1 / 900))
                out.append((t, M["Clicked SMS"], m))
                if r() < 0.12:
                    self._order(out, t + int(expo(1 / 1200)), int(r() * len(self.orders)), r)
            elif r() < 0.012:
                out.append((t0 + int(expo(1 / 600)), M["Unsubscribed from SMS Marketing"], m))
        else:
            out.append((t0, rec, m))
            if r() < 0.12:
                out.append((t0 + int(expo(1 / 1800)), M["Opened Push"], m))

    def _order(self, out: list[tuple[int, int, int]], t: int, order: int, r: Any) -> None:
        """Placed Order plus one Ordered Product per line (same second), maybe fulfilled later."""
        out.append((t, PLACED_ORDER, order))
        for k in range(len(self.orders[order]["Items"])):
            out.append((t, ORDERED_PRODUCT, order * 8 + k))
        if r() < 0.85:
            out.append((t + 2 * DAY + int(3 * DAY * r()), FULFILLED_ORDER, order))

    def _build_order_templates(self) -> None:
        """A few hundred baskets shared by all orders: events differ only in ids and times."""
        rng = random.Random(self.seed * 7 + 17)
        codes = [row.attrs["unique_code"] for row in self.rows["coupon_codes"] if row.attrs["status"] == "USED"]
        for _ in range(256):
            lines = []
            for p in rng.sample(self.products, min(len(self.products), rng.choice((1, 1, 1, 2, 2, 3)))):
                qty = rng.choice((1, 1, 1, 2))
                lines.append({**p.item, "Quantity": qty, "RowTotal": round(p.price * qty, 2)})
            subtotal = round(sum(line["RowTotal"] for line in lines), 2)
            discount = [rng.choice(codes)] if codes and rng.random() < 0.2 else []
            value = round(subtotal * (0.85 if discount else 1.0) + (0 if subtotal > 75 else 7.95), 2)
            self.orders.append({
                "Items": lines, "ItemNames": [line["ProductName"] for line in lines],
                "Categories": sorted({c for line in lines for c in line["Categories"]}),
                "Brands": [self.brand.name], "Discount Codes": discount,
                "Total Discounts": round(subtotal * 0.15, 2) if discount else 0,
                "Source Name": rng.choice(("web", "web", "shopify_draft_order", "pos")),
                "$value": value, "$currency_code": self.brand.currency,
            })

    def add_events(self, count: int, t: int, metric: int | None, rng: random.Random,
                   profiles: list[int]) -> list[int]:
        """Append `count` events at time `t` for random live profiles; returns their indexes."""
        if not self.orders:
            self._build_order_templates()
        ev = self.events
        start = len(ev.ts)
        for _ in range(count):
            m = metric if metric is not None else rng.choice(
                (VIEWED_PRODUCT, VIEWED_PRODUCT, ACTIVE_ON_SITE, PLACED_ORDER, STARTED_CHECKOUT, RECEIVED["email"],
                 M["Opened Email"], LOYALTY))
            p = rng.choice(profiles)
            ev.ts.append(t)
            ev.profile.append(p)
            ev.metric.append(m)
            ev.ref.append(self._new_ref(m, rng))
            ev.episode.append(self.episodes)
            self.episodes += 1
            if t > self.profile_last_event[p]:
                self.profile_last_event[p] = t
        return list(range(start, start + count))

    def _new_ref(self, metric: int, rng: random.Random) -> int:
        channel = METRICS[metric].channel
        if channel:
            candidates = [m for m, msg in enumerate(self.messages) if msg.channel == channel]
            return rng.choice(candidates) if candidates else -1
        if metric == ORDERED_PRODUCT:
            order = rng.randrange(len(self.orders))
            return order * 8 + rng.randrange(len(self.orders[order]["Items"]))
        if metric in ORDER_METRICS:
            return rng.randrange(len(self.orders))
        if metric == VIEWED_PRODUCT:
            return rng.randrange(len(self.products))
        return rng.randrange(1000)


def _subject(name: str, variation: int) -> str:
    base = name.split(" (")[0]
    openers = ("", "Inside: ", "Psst... ", "Just for you: ")
    return f"{openers[variation % len(openers)]}{base}"


def _template_html(brand: Brand, kind: str, i: int) -> str:
    colors = ("#1f3a5f", "#2d5d3a", "#7a3b2e", "#333333")
    color = colors[i % len(colors)]
    blocks = "".join(
        f'<tr><td style="padding:16px 32px;font-family:Helvetica,Arial,sans-serif;font-size:15px;'
        f'line-height:22px;color:#333">{text}</td></tr>'
        for text in (
            "Hi {{ first_name|default:'there' }},",
            f"{kind}: a note from everyone at {brand.name}. We picked a few things we think you will love.",
            '<a href="{{ organization.url }}" style="background:' + color + ';color:#fff;padding:12px 24px;'
            'border-radius:4px;text-decoration:none;display:inline-block">Shop now</a>',
            "Free shipping on orders over $75. Easy returns within 30 days.",
        )
    )
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><meta name="viewport" '
        'content="width=device-width,initial-scale=1"><title>' + kind + "</title></head>"
        '<body style="margin:0;background:#f4f4f4"><table role="presentation" width="100%" cellpadding="0" '
        'cellspacing="0"><tr><td align="center"><table role="presentation" width="600" style="background:#fff">'
        f'<tr><td style="background:{color};padding:24px;text-align:center;color:#fff;font-size:24px;'
        f'font-family:Georgia,serif">{brand.name}</td></tr>{blocks}'
        '<tr><td style="padding:24px 32px;font-size:11px;color:#888;font-family:Helvetica,Arial,sans-serif">'
        f"{brand.street}, {brand.city}, {brand.region} {brand.zip}<br>"
        '<a href="{% unsubscribe_url %}">Unsubscribe</a> | <a href="{% manage_preferences_url %}">'
        "Manage preferences</a></td></tr></table></td></tr></table></body></html>"
    )


def _template_definition(template_id: str) -> dict[str, Any]:
    return {
        "id": None,
        "template_id": template_id,
        "body": {"id": None, "properties": {"id": None, "css_class": None},
                 "styles": {"background_color": "#f4f4f4", "width": 600}, "sections": []},
        "styles": [{"id": None, "style_type": "base-styles",
                    "properties": {"currency": "USD", "currency_set_on_template": False,
                                   "disable_websafe_fonts": False, "is_user_draggable": False,
                                   "mobile_optimizations": True, "tip_tap_enabled": True},
                    "styles": {"content_background_color": "#ffffff", "border_radius": 0}}],
    }


# ---------------------------------------------------------------------------------------------
# Per-record rendering of the column-wise tables
# ---------------------------------------------------------------------------------------------

class ProfileView:
    """Profile attributes computed from the profile's index hash; ids cached because events repeat them."""

    def __init__(self, world: World) -> None:
        self.w = world
        self.salt = world.seed * 131 + 7
        # Encoded up front (~1 us each, 0.2 s for 200k): every page of 1000 events names hundreds of
        # profiles, and encoding them on first sight made a client's first pages a quarter slower.
        self._ids: list[str | None] = [self._encode(i) for i in range(len(world.profile_created))]
        self._phone = Affine(10**7, self.salt)
        self._ext = Affine(10**12, self.salt + 1)
        self.list_ids = [row.id for row in world.rows["lists"]]

    def ident(self, i: int) -> str:
        ids = self._ids
        if i >= len(ids):
            ids.extend([None] * (i + 1 - len(ids)))
        text = ids[i]
        if text is None:
            text = ids[i] = self._encode(i)
        return text

    def _encode(self, i: int) -> str:
        return self.w.profile_ids.encode(i, self.w.profile_created[i] * 1000 + mix64(i, 5) % 1000)

    def _h(self, i: int) -> int:
        return mix64(i, self.salt)

    def _since_created(self, i: int, h: int) -> int:
        """A time between the profile's creation and the anchor (profiles added later: creation)."""
        created = self.w.profile_created[i]
        return created + h % max(1, self.w.anchor - created)

    def email(self, i: int) -> str | None:
        h = self._h(i)
        if h % 100 < 4:
            return None  # SMS-only subscriber
        first = pick(FIRST_NAMES, h >> 8).lower()
        last = pick(LAST_NAMES, h >> 16).lower().replace("'", "").replace("ü", "u")
        local = (f"{first}.{last}", f"{first}{last[0]}", f"{first[0]}{last}", f"{first}_{last}")[(h >> 24) % 4]
        local = local.replace("é", "e").replace("á", "a")
        return f"{local}{i}@{pick(EMAIL_DOMAINS, h >> 28)}"

    def city(self, i: int) -> tuple[Any, ...]:
        h = self._h(i)
        return CITIES[(h >> 32) % len(CITIES)] if (h >> 36) % 10 else CITIES[0]

    def phone(self, i: int) -> str | None:
        h = self._h(i)
        if (h >> 40) % 100 < 35:
            return None
        code = self.city(i)[7]
        number = f"{self._phone.enc(i % 10**7):07d}"
        if code == "1":
            return f"+1{201 + (h >> 44) % 700}{number}"
        return f"+{code}7{(h >> 44) % 100:02d}{number}"

    def external_id(self, i: int) -> str | None:
        return str(6_000_000_000_000 + self._ext.enc(i)) if (self._h(i) >> 48) % 100 < 65 else None

    def kx(self, i: int) -> str:
        """Klaviyo's exchange id (`_kx`): an opaque per-profile token."""
        return f"{mix64(i, self.salt + 2):016x}{i:x}"

    def push_token(self, i: int) -> str | None:
        if (self._h(i) >> 52) % 100 >= 18:
            return None
        return f"{mix64(i, self.salt + 3):016x}{mix64(i, self.salt + 4):016x}{i:032x}"

    def push_token_id(self, i: int) -> str:
        return uuid_like(i, self.salt + 9)

    def push_token_attributes(self, i: int) -> dict[str, Any]:
        h = mix64(i, self.salt + 10)
        ios = h % 3 != 0
        recorded = iso(self._since_created(i, h))
        return {
            "created": recorded, "token": self.push_token(i),
            "enablement_status": "AUTHORIZED" if h % 10 else "DENIED",
            "platform": "ios" if ios else "android", "vendor": "apns" if ios else "fcm",
            "background": "AVAILABLE", "recorded_date": recorded,
            "metadata": {"device_id": f"{h:016X}"[:16], "klaviyo_sdk": "swift" if ios else "android",
                         "sdk_version": "4.2.1", "device_model": "iPhone15,2" if ios else "Pixel 8",
                         "os_name": "ios" if ios else "android", "os_version": "17.5" if ios else "14",
                         "manufacturer": "Apple" if ios else "Google", "app_name": self.w.brand.name,
                         "app_version": "3.8.0", "app_build": "380", "app_id": f"com.{self.w.brand.sku.lower()}.app",
                         "environment": "release"},
        }

    def suppressions(self, i: int) -> tuple[list[tuple[str, int]], list[tuple[str, str, int]]]:
        """Email marketing suppressions: ([(reason, ts)], [(list_id, reason, ts)]), mostly empty; none without an
        email (`subscriptions.email` is null then, so no suppression filter may match the profile)."""
        if self.email(i) is None:
            return [], []
        h = mix64(i, self.salt + 5)
        when = self._since_created(i, h)
        suppression = []
        if h % 100 < 5:
            reason = ("HARD_BOUNCE", "UNSUBSCRIBE", "SPAM_COMPLAINT", "USER_SUPPRESSED", "INVALID_EMAIL")[(h >> 8) % 5]
            suppression = [(reason, when)]
        list_suppressions = []
        if (h >> 16) % 100 < 4 and self.list_ids:
            list_suppressions = [(pick(self.list_ids, h >> 20), "USER_SUPPRESSED", when - (h >> 24) % DAY)]
        return suppression, list_suppressions

    def attributes(self, i: int) -> dict[str, Any]:
        w, h = self.w, self._h(i)
        first = pick(FIRST_NAMES, h >> 8)
        last = pick(LAST_NAMES, h >> 16)
        city = self.city(i)
        has_location = (h >> 56) % 10 != 0
        lat = round(city[5] + ((h >> 20) % 2000 - 1000) / 10000, 4)
        lon = round(city[6] + ((h >> 30) % 2000 - 1000) / 10000, 4)
        as_text = (h >> 60) % 6 == 0  # some integrations send coordinates as strings
        last_event = w.profile_last_event[i]
        attrs: dict[str, Any] = {
            "email": self.email(i),
            "phone_number": self.phone(i),
            "external_id": self.external_id(i),
            "first_name": first,
            "last_name": last,
            "organization": pick(COMPANIES, h >> 12) if (h >> 4) % 5 == 0 else None,
            "locale": city[8],
            "title": pick(JOB_TITLES, h >> 14) if (h >> 6) % 4 == 0 else None,
            "image": f"https://images.{w.brand.domain}/avatars/{h % 10**8:08d}.jpg" if (h >> 10) % 9 == 0 else None,
            "created": iso(w.profile_created[i]),
            "updated": iso(w.profile_updated[i]),
            "last_event_date": iso(last_event),
            "location": {
                "address1": f"{100 + (h >> 18) % 9800} {pick(STREETS, h >> 22)} {pick(STREET_KINDS, h >> 26)}",
                "address2": f"Apt {1 + (h >> 34) % 40}{'ABCD'[(h >> 38) % 4]}" if (h >> 42) % 4 == 0 else None,
                "city": city[0], "country": city[2], "region": city[1],
                "zip": city[3] + (f"{(h >> 46) % 100:02d}" if city[2] == "United States" else " 1AA"),
                "timezone": city[4], "ip": f"{23 + (h >> 8) % 180}.{(h >> 16) % 256}.{(h >> 24) % 256}.{h % 254 + 1}",
                "latitude": str(lat) if as_text else lat, "longitude": str(lon) if as_text else lon,
            } if has_location else {k: None for k in ("address1", "address2", "city", "country", "region", "zip",
                                                      "timezone", "ip", "latitude", "longitude")},
            "properties": self._properties(i, h),
        }
        edits = w.profile_edits.get(i)
        if edits:
            for key, value in edits.items():
                if key == "properties":
                    attrs["properties"] = {**attrs["properties"], **value}
                else:
                    attrs[key] = value
        return attrs

    def _properties(self, i: int, h: int) -> dict[str, Any]:
        g = mix64(i, self.salt + 6)
        props: dict[str, Any] = {}
        if g % 3:
            props["$source"] = pick(("Shopify", "Signup Form", "API", "CSV Import"), g >> 4)
        if (g >> 8) % 2:
            props["Loyalty Tier"] = pick(LOYALTY_TIERS, g >> 10)
            props["Loyalty Points"] = (g >> 12) % 4000
        if (g >> 14) % 3 == 0:
            props["Birthday"] = f"{1960 + (g >> 16) % 45}-{1 + (g >> 22) % 12:02d}-{1 + (g >> 26) % 28:02d}"
        if (g >> 30) % 2:
            props["Accepts Marketing"] = bool((g >> 31) % 4)
        if (g >> 32) % 3 == 0:
            props["Favorite Categories"] = sorted({pick(INTERESTS, g >> 34), pick(INTERESTS, g >> 38)})
        if (g >> 42) % 4 == 0:
            props["Signup Source"] = pick(SIGNUP_SOURCES, g >> 44)
        if (g >> 47) % 5 == 0:
            props["Average Order Value"] = round(40 + (g >> 49) % 16000 / 100, 2)
        if (g >> 50) % 7 == 0:
            props["Shopify Tags"] = ["vip", "wholesale", "newsletter"][: 1 + (g >> 53) % 3]
        if (g >> 55) % 9 == 0:
            props["Quiz Result"] = None
        return props

    def subscriptions(self, i: int) -> dict[str, Any]:
        h = mix64(i, self.salt + 7)
        when = iso(self._since_created(i, h))
        suppression, list_suppressions = self.suppressions(i)
        r = h % 100
        consent = "SUBSCRIBED" if r < 60 else "UNSUBSCRIBED" if r < 75 else "NEVER_SUBSCRIBED"
        if suppression and suppression[0][0] == "UNSUBSCRIBE":
            consent = "UNSUBSCRIBED"
        method = pick(("FORM", "API", "SHOPIFY", "IMPORT", "PREFERENCE_PAGE"), h >> 8)
        email = None if self.email(i) is None else {
            "marketing": {
                "can_receive_email_marketing": consent == "SUBSCRIBED" and not suppression,
                "consent": consent, "consent_timestamp": when if consent != "NEVER_SUBSCRIBED" else None,
                "last_updated": when, "method": method if consent != "NEVER_SUBSCRIBED" else None,
                "method_detail": "Footer signup form" if method == "FORM" else None, "custom_method_detail": None,
                "double_optin": (h >> 12) % 5 == 0,
                "suppression": [{"reason": reason, "timestamp": iso(ts)} for reason, ts in suppression],
                "list_suppressions": [{"list_id": list_id, "reason": reason, "timestamp": iso(ts)}
                                      for list_id, reason, ts in list_suppressions],
            },
        }
        sms = None
        if self.phone(i) is not None:
            sms_consent = "SUBSCRIBED" if (h >> 16) % 100 < 55 else "UNSUBSCRIBED"
            sms = {
                "marketing": {"can_receive_sms_marketing": sms_consent == "SUBSCRIBED", "consent": sms_consent,
                              "consent_timestamp": when, "method": "TEXT_TO_JOIN" if (h >> 20) % 2 else "FORM",
                              "method_detail": "JOIN", "last_updated": when},
                "transactional": {"can_receive_sms_transactional": True, "consent": "SUBSCRIBED",
                                  "consent_timestamp": when, "method": "CHECKOUT", "method_detail": None,
                                  "last_updated": when},
            }
        push = self.push_token(i) is not None
        return {
            "email": email,
            "sms": sms,
            "mobile_push": {"marketing": {"can_receive_push_marketing": push,
                                          "consent": "SUBSCRIBED" if push else "NEVER_SUBSCRIBED",
                                          "consent_timestamp": when if push else None}},
        }

    def predictive_analytics(self, i: int) -> dict[str, Any]:
        h = mix64(i, self.salt + 8)
        orders = h % 9
        aov = round(35 + (h >> 8) % 20000 / 100, 2)
        historic = round(orders * aov, 2)
        predicted = round(((h >> 24) % 300) / 100 * aov, 2)
        affinity = ["email", "sms", "push"]
        return {
            "historic_clv": historic, "predicted_clv": predicted, "total_clv": round(historic + predicted, 2),
            "historic_number_of_orders": orders, "predicted_number_of_orders": round(((h >> 24) % 300) / 100, 2),
            "average_days_between_orders": round(20 + (h >> 32) % 200, 1) if orders > 1 else None,
            "average_order_value": aov if orders else 0.0,
            "churn_probability": round((h >> 40) % 100 / 100, 2),
            "expected_date_of_next_order": iso(self.w.anchor + (h >> 48) % (120 * DAY)) if orders else None,
            "ranked_channel_affinity": affinity[(h >> 56) % 3:] + affinity[: (h >> 56) % 3],
        }


class EventView:
    """Event attributes from the columns plus shared property templates."""

    _CLIENTS = (
        {"Client Name": "Gmail", "Client OS": "Android", "Client Type": "Mobile", "Client OS Family": "Android"},
        {"Client Name": "Apple Mail", "Client OS": "iOS", "Client Type": "Mobile", "Client OS Family": "iOS"},
        {"Client Name": "Chrome", "Client OS": "Windows", "Client Type": "Webmail", "Client OS Family": "Windows"},
        {"Client Name": "Outlook", "Client OS": "macOS", "Client Type": "Desktop", "Client OS Family": "OS X"},
    )
    _PAGES = ("/", "/collections/new-arrivals", "/collections/sale", "/pages/about", "/blogs/journal")

    def __init__(self, world: World) -> None:
        self.w = world
        self.salt = world.seed * 131 + 9
        self._uuid_middles: dict[int, str] = {}

    def ident(self, i: int) -> str:
        return event_id(i, self.salt)

    def uuid(self, i: int, ts: int) -> str:
        """A time-based (version 1) UUID, as Klaviyo's event `uuid` is; unique through its node bits.

        The middle groups change every ~7 minutes of event time, so they are cached.
        """
        t = ts * 10_000_000 + 0x01B21DD213814000 + (i * 7919) % 10_000_000
        high = t >> 32
        middle = self._uuid_middles.get(high)
        if middle is None:
            middle = self._uuid_middles[high] = f"{high & 0xFFFF:04x}-{0x1000 | (high >> 16) & 0x0FFF:04x}"
        node = (i * 0x5DEECE66D + self.salt) & 0xFFFFFFFFFFFF
        return f"{t & 0xFFFFFFFF:08x}-{middle}-{0x8000 | i & 0x3FFF:04x}-{node:012x}"

    def properties(self, i: int) -> dict[str, Any]:
        w = self.w
        ev = w.events
        metric = ev.metric[i]
        ref = ev.ref[i]
        episode = ev.episode[i]
        if metric in MESSAGE_METRICS:
            if ref < 0:
                return {"$event_id": f"{episode}:{metric}"}
            props = {**w.messages[ref].props, "$event_id": f"{episode}:{metric}:{i}"}
            if metric == M["Opened Email"]:
                props.update(self._CLIENTS[episode % 4])
                props["$machine_open"] = episode % 7 == 0
            elif metric in (M["Clicked Email"], M["Clicked SMS"]):
                props["URL"] = w.products[episode % len(w.products)].props["URL"]
            elif metric == M["Bounced Email"]:
                props["Bounce Type"] = "hard" if episode % 3 else "soft"
            elif metric == M["Failed to Deliver SMS"]:
                props["Failure Type"] = "Carrier rejected"
            return props
        if metric in ORDER_METRICS:
            order_id = str(5_000_000_000 + episode)
            props = {**w.orders[ref], "$event_id": order_id, "OrderId": order_id}
            if metric == STARTED_CHECKOUT:
                props["$event_id"] = f"{order_id}_checkout"
                props["CheckoutURL"] = f"https://www.{w.brand.domain}/checkouts/{order_id}"
            else:
                props["FulfillmentStatus"] = "fulfilled"
            return props
        if metric == ORDERED_PRODUCT:
            order, line = divmod(ref, 8)
            item = w.orders[order]["Items"][line]
            order_id = str(5_000_000_000 + episode)
            return {**item, "$value": item["RowTotal"], "OrderId": order_id, "$event_id": f"{order_id}_{line}"}
        if metric == VIEWED_PRODUCT:
            return {**w.products[ref].props, "$event_id": f"{episode}:{i}"}
        if metric == ACTIVE_ON_SITE:
            return {"page": f"https://www.{w.brand.domain}{self._PAGES[episode % 5]}", "$is_session_activity": True,
                    "$use_ip": True, "os": ("iOS", "Android", "Windows", "Mac OS X")[episode % 4]}
        if metric == LOYALTY:
            return {"Points": 10 + ref % 190, "Reason": ("Purchase", "Review", "Referral", "Birthday")[ref % 4],
                    "Balance": 100 + ref * 7, "$event_id": f"loyalty-{episode}"}
        product = w.products[ref % len(w.products)].props
        return {"Rating": 1 + ref % 5, "ProductName": product["ProductName"],
                "ProductID": product["ProductID"], "Review Title": ("Love it", "Great quality", "Runs small",
                                                                     "Would buy again", "Just okay")[ref % 5],
                "Verified Buyer": ref % 3 != 0, "$event_id": f"review-{episode}"}
