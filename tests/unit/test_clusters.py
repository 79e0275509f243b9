"""Behavioural clusters: plain-unit features of a folded profile, clear behaviours kept apart, clusters in words."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest

from app.events import Event
from models.clusters import FEATURES, BehaviourClusters, cluster_features
from tables.profile import Profile, fold

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MINUTE = 60_000
DAY = 86_400_000
BEHAVIOURS = ("big spender", "window shopper", "one-time buyer")


def event(name: str, ts: int, **props: object) -> Event:
    return Event("track", name, "u1", f"m{ts}{name}", ts, props, {})


def folded(*events: Event) -> Profile:
    profile = Profile(user_id="u1")
    for step in events:
        profile = fold(profile, step)
    return profile


def test_cluster_features_are_plain_units_of_the_folded_profile() -> None:
    profile = folded(
        event("Product Viewed", T0, product_id="p1", price=20.0),
        event("Product Viewed", T0 + MINUTE, product_id="p2", price=30.0),
        event("Product Added", T0 + 2 * MINUTE, product_id="p1", price=20.0),
        event("Product Added", T0 + 3 * MINUTE, product_id="p2", price=30.0),
        event("Product Viewed", T0 + DAY, product_id="p3", price=5.0),  # a second session
        event("Order Completed", T0 + DAY + MINUTE, revenue=50.0),
    )
    x = cluster_features(profile, T0 + DAY + MINUTE + 3 * DAY)
    assert x == pytest.approx(
        {
            "days_since_order": 3.0,
            "orders": 1.0,
            "revenue": 50.0,
            "sessions": 2.0,
            "views_per_session": 1.5,
            "cart_abandonment": 0.5,
        }
    )
    assert tuple(x) == FEATURES


def test_a_user_who_never_ordered_counts_days_since_first_seen_up_to_a_year() -> None:
    profile = folded(
        event("Product Viewed", T0, product_id="p1"),
        event("Product Added", T0 + MINUTE, product_id="p1"),
    )
    assert cluster_features(profile, T0 + 10 * DAY)["days_since_order"] == pytest.approx(10.0)
    assert cluster_features(profile, T0 + 1000 * DAY)["days_since_order"] == 365.0
    assert cluster_features(profile, T0)["cart_abandonment"] == 1.0
    assert cluster_features(Profile(user_id="new"), T0) == dict.fromkeys(FEATURES, 0.0)


def user(behaviour: str, rng: random.Random) -> dict[str, float]:
    """The snapshot of one synthetic user of ``behaviour``, through a profile and :func:`cluster_features`."""
    now = T0 + 400 * DAY
    if behaviour == "big spender":
        orders, sessions = rng.randint(8, 20), rng.randint(20, 60)
        profile = Profile(
            user_id="u",
            first_seen_ms=now - 300 * DAY,
            sessions=sessions,
            orders=orders,
            revenue=round(orders * rng.uniform(80, 200), 2),
            last_order_ms=now - int(rng.uniform(0.5, 10) * DAY),
            event_counts={"Product Viewed": sessions * rng.randint(3, 6), "Product Added": orders + rng.randint(0, 3)},
        )
    elif behaviour == "window shopper":
        sessions = rng.randint(5, 20)
        profile = Profile(
            user_id="u",
            first_seen_ms=now - int(rng.uniform(20, 200) * DAY),
            sessions=sessions,
            event_counts={"Product Viewed": sessions * rng.randint(10, 25), "Product Added": rng.randint(3, 15)},
        )
    else:
        sessions = rng.randint(1, 3)
        ordered = now - int(rng.uniform(60, 300) * DAY)
        profile = Profile(
            user_id="u",
            first_seen_ms=ordered - DAY,
            sessions=sessions,
            orders=1,
            revenue=round(rng.uniform(30, 100), 2),
            last_order_ms=ordered,
            event_counts={"Product Viewed": sessions * rng.randint(2, 5), "Product Added": rng.randint(1, 2)},
        )
    return cluster_features(profile, now)


def population(seed: int, per_behaviour: int = 100) -> list[tuple[str, dict[str, float]]]:
    rng = random.Random(seed)
    users = [(behaviour, user(behaviour, rng)) for behaviour in BEHAVIOURS for _ in range(per_behaviour)]
    rng.shuffle(users)
    return users


def learned(model: BehaviourClusters, users: list[tuple[str, dict[str, float]]]) -> dict[str, Counter[int]]:
    """Learn every user once, then count where each behaviour is assigned."""
    for _, x in users:
        model.learn(x)
    clusters: dict[str, Counter[int]] = defaultdict(Counter)
    for behaviour, x in users:
        clusters[behaviour][model.assign(x)] += 1
    return clusters


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_users_of_one_behaviour_share_a_cluster_and_different_behaviours_do_not(seed: int) -> None:
    clusters = learned(BehaviourClusters(3, seed=seed), population(seed))
    main = {behaviour: counts.most_common(1)[0] for behaviour, counts in clusters.items()}
    for behaviour, (_, users) in main.items():
        assert users >= 90, f"{behaviour}: only {users}/100 in its main cluster: {clusters[behaviour]}"
    assert len({index for index, _ in main.values()}) == 3, f"two behaviours share a main cluster: {main}"


def test_with_more_clusters_than_behaviours_no_cluster_mixes_them() -> None:
    clusters = learned(BehaviourClusters(seed=7), population(7))
    members: dict[int, Counter[str]] = defaultdict(Counter)
    for behaviour, counts in clusters.items():
        for index, users in counts.items():
            members[index][behaviour] += users
    for index, behaviours in members.items():
        (_, top), total = behaviours.most_common(1)[0], sum(behaviours.values())
        assert top >= 0.9 * total, f"cluster {index} mixes behaviours: {behaviours}"


def test_describe_names_the_big_spenders_frequent_and_high_value() -> None:
    model = BehaviourClusters(3, seed=11)
    users = population(11)
    clusters = learned(model, users)
    description = model.describe()
    spenders = description[clusters["big spender"].most_common(1)[0][0]]
    shoppers = description[clusters["window shopper"].most_common(1)[0][0]]
    assert "frequent" in spenders["summary"] and "high-value" in spenders["summary"]
    assert "occasional" not in spenders["summary"]
    assert "high cart abandonment" in shoppers["summary"] and "browsing-heavy" in shoppers["summary"]
    assert 8 <= spenders["means"]["orders"] <= 20 and spenders["means"]["revenue"] >= 640
    assert shoppers["means"]["orders"] == 0 and shoppers["means"]["cart_abandonment"] == 1.0
    assert sum(c["users"] for c in description) == model.version == len(users)
    assert [c["cluster"] for c in description] == [0, 1, 2]


def test_assign_learns_nothing_and_is_cluster_zero_before_learning() -> None:
    model = BehaviourClusters(seed=3)
    x = user("big spender", random.Random(3))
    assert model.assign(x) == 0
    assert [c["summary"] for c in model.describe()] == ["empty"] * 4
    for _, snapshot in population(3):
        model.learn(snapshot)
    before = model.describe()
    model.assign(x)
    assert model.describe() == before and model.version == 300


def test_identical_users_make_one_typical_cluster() -> None:
    model = BehaviourClusters(seed=5)
    x = user("one-time buyer", random.Random(5))
    assert {model.learn(x) for _ in range(50)} == {0}
    first, *rest = model.describe()
    assert first["users"] == 50 and first["summary"] == "typical"
    assert first["means"]["orders"] == 1.0
    assert all(c["users"] == 0 for c in rest)


def test_a_few_whales_do_not_take_a_cluster_of_their_own() -> None:
    """Heavy tails: three users spending 100x the others are still big spenders, not a behaviour apart."""
    users = population(13)
    whale = {**user("big spender", random.Random(13)), "orders": 400.0, "revenue": 250_000.0, "sessions": 900.0}
    users[::100] = [("big spender", whale)] * 3
    clusters = learned(BehaviourClusters(3, seed=13), users)
    main = {behaviour: counts.most_common(1)[0][0] for behaviour, counts in clusters.items()}
    assert len(set(main.values())) == 3, f"two behaviours share a cluster: {dict(clusters)}"
    assert clusters["big spender"][main["big spender"]] >= 0.9 * sum(clusters["big spender"].values())
