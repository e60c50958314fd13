"""The ``recommendations`` section: baskets, rules, top-N and offline evaluation."""

from typing import ClassVar, Literal

from pydantic import Field

from customer_intel.params._base import Section


class RecommendationsParams(Section):
    """Parameters of the recommendations stage (notebook ``05_recommendations``)."""

    COMMON_KEYS: ClassVar[tuple[str, ...]] = ("seed", "engine", "spark")

    basket: Literal["session", "order", "user_day"] = Field(
        "session", description="what a basket is"
    )
    item: Literal["product", "category", "brand"] = Field("product", description="item level")
    include_carts: bool = Field(False, description="count cart events as basket items too")
    max_basket_items: int = Field(
        250,
        ge=2,
        le=100_000,
        description="larger baskets are skipped or capped (and counted); 250 keeps typical orders",
    )
    large_basket_rule: Literal["skip", "cap"] = Field("skip", description="what to do with them")
    exclude_items: list[str] = Field(
        default_factory=list,
        description="items left out of baskets after they are formed (e.g. POSTAGE)",
    )
    exclude_where: str | None = Field(
        None,
        description="SQL on event columns: matching rows' items are left out of baskets",
    )
    min_support: float = Field(
        0.0005, gt=0, description="minimum support: a fraction of baskets (<1) or a count (>=1)"
    )
    max_len: int = Field(3, ge=1, le=3, description="largest itemset size")
    min_confidence: float = Field(0.05, ge=0, le=1, description="minimum rule confidence")
    min_lift: float = Field(1.0, ge=0, description="minimum rule lift")
    rank_by: Literal["lift", "confidence"] = Field("lift", description="how partners are ranked")
    top_n: int = Field(10, ge=1, le=100, description="recommendations per product and customer")
    recent_items: int = Field(5, ge=1, le=100, description="a customer's recent items used")
    exclude_purchased: bool = Field(True, description="never recommend what a customer bought")
    test_days: int = Field(14, ge=1, le=365, description="last days held out for evaluation")
    eval_ks: list[int] = Field(default_factory=lambda: [5, 10], description="k for metrics@k")
    eval_users: int = Field(
        100_000,
        ge=1,
        le=100_000_000,
        description="test customers evaluated: a random sample (seeded by common.seed) if more",
    )
