"""Classifier router: the most similar source description wins; one source only."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from ragloom.errors import ConfigError
from ragloom.planners.router import ClassifierRouter
from ragloom.retrievers.base import HashEmbedder


@dataclass
class FakeSource:
    name: str
    description: str
    examples: list[str] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)

    def search(self, query: str) -> list[str]:
        self.queries.append(query)
        return [f"{self.name}:{query}"]


def sources() -> list[FakeSource]:
    return [
        FakeSource("orders", "customer orders, order status, shipping and delivery of an order"),
        FakeSource("products", "product manuals: lamp bulb wattage dimmable specifications"),
        FakeSource(
            "policies",
            "return policy, refunds and warranty rules",
            examples=["can I send it back for a refund"],
        ),
    ]


def test_routes_to_the_most_similar_description() -> None:
    router = ClassifierRouter(sources(), HashEmbedder(dim=512))
    assert router.route_name("where is my order, has the delivery shipped?") == "orders"
    assert router.route_name("is the lamp dimmable, what bulb wattage?") == "products"
    assert router.route_name("can I get a refund under the warranty?") == "policies"
    scores = router.scores("refund")
    assert set(scores) == {"orders", "products", "policies"}
    assert router.ranked("refund")[0] == "policies"


def test_search_uses_only_the_routed_source() -> None:
    srcs = sources()
    router = ClassifierRouter(srcs, HashEmbedder(dim=512))
    assert router.search("order status of my delivery") == ["orders:order status of my delivery"]
    assert [len(s.queries) for s in srcs] == [1, 0, 0]


def test_examples_join_the_profile() -> None:
    # "send it back" appears only in the policies source's examples
    router = ClassifierRouter(sources(), HashEmbedder(dim=512))
    assert router.route_name("send it back") == "policies"


def test_bad_sources_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        ClassifierRouter([], HashEmbedder())
    with pytest.raises(ConfigError, match="unique"):
        ClassifierRouter([sources()[0], sources()[0]], HashEmbedder())


def test_from_descriptions_routes_tools() -> None:
    router = ClassifierRouter.from_descriptions(
        {"weather": "weather forecast rain sun temperature", "stocks": "stock prices and shares"},
        HashEmbedder(),
    )
    assert router.route_name("what is the temperature forecast") == "weather"
