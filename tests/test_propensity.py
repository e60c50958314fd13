"""Propensity: no leakage, planted truth recovered, baselines beaten, probabilities calibrated."""

from __future__ import annotations

import ibis
import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from customer_intel import propensity, scoring
from customer_intel.params.propensity import DEFAULT_FEATURES, PropensityParams

from conftest import ingested_sample

LGB = {
    k: v
    for k, v in PropensityParams().model_dump().items()
    if k
    in (
        "n_estimators",
        "learning_rate",
        "num_leaves",
        "min_child_samples",
        "subsample",
        "colsample_bytree",
        "reg_lambda",
        "min_data_per_group",
        "cat_smooth",
    )
} | {"subsample_freq": 1}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    # 600k events: ~17k users seen before the cutoff, ~300 buyers among the test users. At a
    # store's 22 events per user and 5-15% buying in the last 30 days, 200k events leave ~110
    # test buyers, an AUC standard error (~0.02) larger than the model's edge over the baselines.
    events, info = ingested_sample(tmp_path_factory.mktemp("prop"), 600_000, seed=4)
    cutoff, end = propensity.split_times(events)
    frame = propensity.training_frame(events, cutoff, end, DEFAULT_FEATURES)
    frame = frame.with_columns(propensity.assign_splits(frame["user_id"], seed=1))
    model = propensity.fit_model(frame, DEFAULT_FEATURES, lgb_params=LGB, seed=1)
    truth = pl.read_parquet(info.truth_dir / "users.parquet")
    return {
        "events": events,
        "frame": frame,
        "model": model,
        "truth": truth,
        "cutoff": cutoff,
        "end": end,
    }


def test_labels_match_the_planted_outcomes(planted):
    j = planted["frame"].join(planted["truth"], on="user_id")
    assert j.height == planted["frame"].height  # every scored user is a generated user
    assert (j["label"] == j["purchased_final30"].cast(pl.Int8)).all()
    assert j["observed_before_cutoff"].all()  # only users active in the observation window


def test_model_recovers_planted_propensity_and_beats_baselines(planted):
    frame, model = planted["frame"], planted["model"]
    test = frame.filter(pl.col("split") == "test")
    y = test["label"].to_numpy()
    p = model.predict(test)
    oracle = roc_auc_score(
        y, test.join(planted["truth"], on="user_id", maintain_order="left")["p_purchase_final30"]
    )
    auc = roc_auc_score(y, p)
    lr = roc_auc_score(
        y,
        propensity.logistic_baseline(frame, DEFAULT_FEATURES, seed=1)[
            frame["split"].to_numpy() == "test"
        ],
    )
    rule = roc_auc_score(y, propensity.rfm_rule_baseline(test))
    assert auc >= 0.95 * oracle, (auc, oracle)
    assert auc > lr and auc > rule, (auc, lr, rule)


def test_calibrated_probabilities_match_observed_rates(planted):
    frame, model = planted["frame"], planted["model"]
    test = frame.filter(pl.col("split") == "test")
    cal = scoring.calibration_table(test["label"].to_numpy(), model.predict(test))
    # Within 10% where the rate is high enough to measure that (deciles with rates above 25%:
    # the top decile here, ~440 users, binomial noise ~5% of the rate). Lower deciles (rates
    # 1-15%) have a noise of 10-40% of the rate by themselves, so for every decile the gap must
    # stay within 3 standard errors of the difference between two binomial estimates: this
    # decile's test users and the isotonic fit on the calibration users (15% of users vs 25% for
    # test). A looser bound, but one that still fails on a miscalibrated model (e.g. raw weighted
    # scores).
    top = cal.filter(pl.col("observed_rate") > 0.25)
    assert top.height >= 1 and (top["relative_error"] < 0.10).all(), cal
    se = (cal["observed_rate"] * (1 - cal["observed_rate"]) / cal["customers"]).sqrt()
    se_diff = se * (1 + 0.25 / 0.15) ** 0.5
    assert ((cal["mean_predicted"] - cal["observed_rate"]).abs() < 3 * se_diff).all(), cal
    assert abs(cal["mean_predicted"].mean() - cal["observed_rate"].mean()) < 0.01


def test_no_leakage_events_in_the_label_window_do_not_move_features(planted):
    events, cutoff = planted["events"], planted["cutoff"]
    before = propensity.features(events, cutoff, DEFAULT_FEATURES).to_polars().sort("user_id")
    c = ibis.literal(cutoff)
    # change every event at or after the cutoff: new types, prices, products, and extra rows
    changed = events.mutate(
        price=ibis.ifelse(events.event_time >= c, events.price * 7 + 1, events.price),
        event_type=ibis.ifelse(events.event_time >= c, "purchase", events.event_type),
        product_id=ibis.ifelse(events.event_time >= c, 999, events.product_id),
    )
    extra = events.filter(events.event_time >= c).limit(500).mutate(user_id=events.user_id + 10**9)
    after = (
        propensity.features(changed.union(extra), cutoff, DEFAULT_FEATURES)
        .to_polars()
        .sort("user_id")
    )
    assert before.equals(after)


def test_unknown_feature_and_bad_imbalance_are_named(planted):
    with pytest.raises(ValueError, match=r"propensity.features: unknown feature\(s\) \['nope'\]"):
        propensity.features(planted["events"], planted["cutoff"], ["events", "nope"])
    with pytest.raises(ValueError, match="propensity.imbalance"):
        propensity.fit_model(planted["frame"], ["events"], lgb_params=LGB, imbalance="smote")


def test_imbalance_weighting_is_recalibrated(planted):
    frame = planted["frame"]
    m = propensity.fit_model(
        frame, DEFAULT_FEATURES, lgb_params=LGB, imbalance="scale_pos_weight", seed=1
    )
    test = frame.filter(pl.col("split") == "test")
    raw, cal = m.raw_scores(test), m.predict(test)
    rate = test["label"].mean()
    assert raw.mean() > 1.5 * rate  # weighting inflates raw probabilities
    assert abs(cal.mean() - rate) < 0.02  # calibration brings them back


def test_shap_contributions_add_up_to_the_raw_log_odds(planted):
    m, frame = planted["model"], planted["frame"]
    sample = frame.head(200)
    contrib = m.contributions(sample)
    raw = m.booster.predict_proba(m._x(sample), raw_score=True)
    assert np.allclose(contrib.sum_horizontal().to_numpy(), raw, atol=1e-6)
    assert m.importance()["feature"].to_list()[0] in DEFAULT_FEATURES


def test_score_table_and_recommendation():
    t = propensity.score_table(
        pl.Series([1, 2, 3, 4]),
        np.array([0.1, 0.9, 0.5, 0.3]),
        pl.DataFrame({"user_id": [2], "segment": ["Champions"]}),
    )
    assert t["user_id"].to_list() == [2, 3, 4, 1] and t["decile"].to_list() == [1, 3, 6, 8]
    assert t["segment"].to_list() == ["Champions", None, None, None]
    text = propensity.recommendation(
        {"depth": 2, "share": 0.5, "expected_conversions": 1.4, "expected_profit": 26.0},
        4,
        0.45,
        20.0,
        1.0,
    )
    assert text.startswith("Contact the top 2 of 4 scored customers (50%)")
