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

LGB = PropensityParams().lgb_params()


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
    lr = roc_auc_score(y, propensity.logistic_baseline(frame, DEFAULT_FEATURES, seed=1))
    rule = roc_auc_score(y, propensity.rfm_rule_baseline(test))
    assert auc >= 0.95 * oracle, (auc, oracle)
    assert auc > lr and auc > rule, (auc, lr, rule)


def test_the_logistic_baseline_equals_scikit_learns_pipeline_on_the_raw_values(planted):
    """Imputing and coding in Polars gives the scores of scikit-learn's imputers and encoder
    on the raw values: with nulls among numbers and categories, levels too rare for their own
    column, and test levels unseen in training."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame = planted["frame"]
    rng = np.random.default_rng(3)
    gaps = pl.Series(rng.random(frame.height) < 0.05)
    frame = frame.with_columns(
        # nulls in a number and in a category
        tenure_days=pl.when(gaps).then(None).otherwise("tenure_days"),
        primary_category=pl.when(gaps).then(None).otherwise("primary_category"),
        # brands only test users have
        preferred_brand=pl.when(
            (pl.col("split") == "test") & pl.Series(rng.random(frame.height) < 0.1)
        )
        .then(pl.lit("unseen-brand-") + pl.col("user_id").cast(pl.String))
        .otherwise("preferred_brand"),
    )
    names = list(DEFAULT_FEATURES)
    cat = [c for c in names if c in propensity.CATEGORICAL]
    num = [c for c in names if c not in cat]
    train = frame.filter(pl.col("split").is_in(["train", "validation"]))
    test = frame.filter(pl.col("split") == "test")
    counts = train["preferred_brand"].value_counts()["count"]
    assert (counts < 20).any() and (counts >= 20).any()  # rare levels are grouped
    reference = Pipeline(
        [
            (
                "pre",
                ColumnTransformer(
                    [
                        (
                            "num",
                            Pipeline(
                                [("i", SimpleImputer(strategy="median")), ("s", StandardScaler())]
                            ),
                            num,
                        ),
                        (
                            "cat",
                            Pipeline(
                                [
                                    ("i", SimpleImputer(strategy="constant", fill_value="missing")),
                                    (
                                        "o",
                                        OneHotEncoder(handle_unknown="ignore", min_frequency=20),
                                    ),
                                ]
                            ),
                            cat,
                        ),
                    ]
                ),
            ),
            ("lr", LogisticRegression(max_iter=2000, random_state=1, solver="newton-cholesky")),
        ]
    )

    def raw(f):
        return f.select(names).to_pandas().astype({c: object for c in cat}).replace({None: np.nan})

    reference.fit(raw(train), train["label"].to_numpy())
    expected = reference.predict_proba(raw(test))[:, 1]
    got = propensity.logistic_baseline(frame, names, seed=1)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)


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


def test_one_pass_predictions_equal_predict_and_raw_scores(planted):
    model = planted["model"]
    test = planted["frame"].filter(pl.col("split") == "test")
    calibrated, raw = model.predict_with_raw(test)
    assert np.array_equal(calibrated, model.predict(test))
    assert np.allclose(raw, model.raw_scores(test), rtol=1e-12, atol=0)


def test_shap_contributions_add_up_to_the_raw_log_odds(planted):
    m, frame = planted["model"], planted["frame"]
    sample = frame.head(200)
    contrib = m.contributions(sample)
    raw = m.booster.predict_proba(m._x(sample), raw_score=True)
    assert np.allclose(contrib.sum_horizontal().to_numpy(), raw, atol=1e-6)
    assert m.importance()["feature"].to_list()[0] in DEFAULT_FEATURES


def test_training_users_sample_is_stratified_seeded_and_keeps_every_test_user():
    rng = np.random.default_rng(0)
    pop = pl.DataFrame(
        {"user_id": rng.permutation(200_000), "label": (rng.random(200_000) < 0.12).astype(np.int8)}
    )
    full = propensity.training_users(pop, seed=7)
    users = propensity.training_users(pop, seed=7, max_train_users=30_000)
    assert users["user_id"].is_sorted()
    # the test share is untouched: the same users as without a sample, all of them
    assert ((users["split"] == "test") == (full["split"] == "test")).all()
    fit = users.filter(pl.col("split").is_in(["train", "validation", "calibration"]))
    pool = full.filter(pl.col("split") != "test")
    assert fit.height == 30_000
    # stratified: the sample's buyers are the pool's share of 30,000, to the user
    assert abs(fit["label"].sum() - 30_000 * pool["label"].mean()) < 1
    # sampled users keep the split they were drawn into
    kept = fit.join(full, on="user_id", suffix="_full")
    assert (kept["split"] == kept["split_full"]).all()
    assert users.equals(propensity.training_users(pop, seed=7, max_train_users=30_000))
    other = propensity.training_users(pop, seed=8, max_train_users=30_000)
    assert not other.equals(users)
    # no sample when the pool is small enough; None means all
    assert propensity.training_users(pop, seed=7, max_train_users=10**6).equals(full)
    assert "sample of 30,000 of the" in propensity.describe_training_users(users)
    assert propensity.describe_training_users(full).startswith("The model learns from all")


def test_stratified_sample_sizes_add_up_and_follow_the_shares():
    y = np.array([0] * 7 + [1] * 3)
    rows = propensity.stratified_sample(y, 5, seed=1)
    assert len(rows) == 5 and len(set(rows)) == 5 and (np.diff(rows) > 0).all()
    assert y[rows].sum() in (1, 2)  # 1.5 buyers expected: largest remainder gives 1 or 2
    assert (propensity.stratified_sample(y, 5, seed=1) == rows).all()
    with pytest.raises(ValueError, match="cannot sample 11 of 10"):
        propensity.stratified_sample(y, 11, seed=1)


def test_training_frame_of_sampled_users_equals_the_full_frame_on_those_users(planted):
    events, cutoff, end = planted["events"], planted["cutoff"], planted["end"]
    pop = propensity.population(events, cutoff, end)
    full = planted["frame"]
    assert pop.equals(full.select("user_id", "label"))
    users = propensity.training_users(pop, seed=1, max_train_users=1_000)
    sample = propensity.training_frame(events, cutoff, end, DEFAULT_FEATURES, users=users)
    kept = users.filter(pl.col("split") != "unsampled")
    assert sample["user_id"].equals(kept["user_id"])
    # the same features as computed for everyone (rfm_score still ranks among all buyers)
    expected = full.join(kept.select("user_id"), on="user_id").drop("split")
    assert sample.select(expected.columns).equals(expected)
    # no sample (every user of the population kept): the same frame as without ``users``
    everyone = propensity.training_users(pop, seed=1)
    frame = propensity.training_frame(events, cutoff, end, DEFAULT_FEATURES, users=everyone)
    assert frame.drop("split").equals(full.drop("split"))
    assert frame["split"].equals(everyone["split"])


def test_feature_batches_equal_features_in_one_query(planted):
    events, cutoff = planted["events"], planted["cutoff"]
    names = [*DEFAULT_FEATURES, "active_days", "days_since_purchase"]
    whole = propensity.features(events, cutoff, names).to_polars().sort("user_id")
    batches = list(propensity.feature_batches(events, cutoff, names, batch_users=4_000))
    assert len(batches) > 3
    assert pl.concat(batches).sort("user_id").equals(whole)
    # a subset of users, in batches, in any order: their rows of the whole
    some = whole["user_id"].sample(3_000, seed=2).shuffle(seed=3)
    subset = propensity.feature_batches(events, cutoff, names, user_ids=some, batch_users=1_000)
    assert (
        pl.concat(list(subset))
        .sort("user_id")
        .equals(whole.filter(pl.col("user_id").is_in(some.implode())))
    )


def test_scoring_in_batches_equals_scoring_in_one_go(planted):
    model, events, end = planted["model"], planted["events"], planted["end"]
    whole = propensity.features(events, end, DEFAULT_FEATURES).to_polars().sort("user_id")
    one_go = model.predict(whole)
    batches = propensity.feature_batches(events, end, DEFAULT_FEATURES, batch_users=997)
    scored = propensity.score_users(model, batches)
    assert scored["user_id"].equals(whole["user_id"])
    assert np.array_equal(scored["probability"].to_numpy(), one_go)
    # predictions in slices of rows equal predictions of the whole frame
    assert np.array_equal(propensity._chunked(model.predict, whole, rows=1000), one_go)


def test_shap_on_a_sample_of_rows(planted):
    test = planted["frame"].filter(pl.col("split") == "test")
    rows = propensity.sample_rows(test, 100, seed=3)
    assert rows.height == 100 and rows["user_id"].is_sorted()
    assert rows.equals(propensity.sample_rows(test, 100, seed=3))
    assert propensity.sample_rows(test, 10**6, seed=3).equals(test)
    shap = planted["model"].contributions(rows)
    mean = propensity.mean_abs_shap(shap)
    assert mean["feature"].to_list() == DEFAULT_FEATURES
    assert mean["mean_abs_shap"].to_list() == pytest.approx(
        [float(shap[f].abs().mean()) for f in DEFAULT_FEATURES]
    )


def test_score_table_breaks_ties_by_user_id_whatever_the_row_order():
    ids = pl.Series([5, 3, 9, 1, 7])
    p = np.array([0.2, 0.5, 0.5, 0.2, 0.9])
    t = propensity.score_table(ids, p, None)
    assert t["user_id"].to_list() == [7, 3, 9, 1, 5]
    assert t["decile"].to_list() == [1, 3, 5, 7, 9]
    order = np.array([4, 2, 0, 3, 1])
    assert propensity.score_table(ids[order], p[order], None).equals(t)


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


def _tiny_events():
    """Two users before the cutoff (2019-10-10) and one purchase after it, by hand."""
    import datetime as dt

    import pyarrow as pa

    def t(day, hh, mm, ss=0):
        return dt.datetime(2019, 10, day, hh, mm, ss, tzinfo=dt.UTC)

    rows = [
        # user, session, time, type, product, category, brand, price
        (1, "s1", t(1, 10, 0), "view", 1, "a", "x", 10.0),
        (1, "s1", t(1, 10, 5), "cart", 1, "a", "x", 10.0),
        (1, "s1", t(1, 10, 10), "purchase", 1, "a", "x", 10.0),
        (1, "s2", t(3, 12, 0), "view", 2, "b", "y", 5.0),
        (1, "s2", t(3, 12, 0, 30), "view", 3, "b", None, 7.0),
        (1, "s3", t(20, 9, 0), "purchase", 2, "b", "y", 5.0),  # label window
        # user 2: category b and a once each (b first): the tie goes to the smallest, "a"
        (2, "s4", t(2, 8, 0), "view", 2, "b", "y", 5.0),
        (2, "s4", t(2, 8, 1), "view", 1, "a", "x", 10.0),
        (2, None, t(5, 9, 0), "view", 1, None, None, 10.0),  # no session: not a session
    ]
    cols = list(zip(*rows, strict=True))
    table = pa.table(
        {
            "user_id": pa.array(cols[0], pa.int64()),
            "user_session": pa.array(cols[1], pa.string()),
            "event_time": pa.array(cols[2], pa.timestamp("us", tz="UTC")),
            "event_type": pa.array(cols[3], pa.string()),
            "product_id": pa.array(cols[4], pa.int64()),
            "category_code": pa.array(cols[5], pa.string()),
            "brand": pa.array(cols[6], pa.string()),
            "price": pa.array(cols[7], pa.float32()),
        }
    )
    return ibis.duckdb.connect().create_table("events", table), t(10, 0, 0)


def test_features_by_hand():
    events, cutoff = _tiny_events()
    names = [*DEFAULT_FEATURES, "active_days", "removals", "spend", "events_per_session"]
    f = propensity.features(events, cutoff, names).to_polars().sort("user_id")
    day = 86400.0
    expected = {
        "user_id": [1, 2],
        "events": [5, 3],
        "views": [3, 3],
        "carts": [1, 0],
        "purchases": [1, 0],
        "sessions": [2, 1],
        "unique_products": [3, 2],
        "active_days": [2, 2],
        "removals": [0, 0],
        "spend": [10.0, 0.0],
        "avg_session_duration_s": [(600 + 30) / 2, 60.0],
        "active_span_days": [2 + (2 * 3600 + 30) / day, 3 + 3600 / day],
        "days_since_last_event": [6 + (11 * 3600 + 59 * 60 + 30) / day, 4 + 15 * 3600 / day],
        "tenure_days": [8 + 14 * 3600 / day, 7 + 16 * 3600 / day],
        "cart_to_view": [1 / 3, 0.0],
        "events_per_session": [5 / 2, 3.0],
        "rfm_score": [3, 0],  # the only buyer scores 1+1+1; non-buyers 0
        "has_prior_purchase": [1, 0],
        "primary_category": ["a", "a"],
        "preferred_brand": ["x", "x"],
    }
    for name, values in expected.items():
        assert f[name].to_list() == pytest.approx(values), name


def test_test_score_table_keeps_labels_and_the_cutoff_state():
    import numpy as np
    import polars as pl

    from customer_intel import propensity as prop

    test = pl.DataFrame(
        {
            "user_id": [3, 1, 2],
            "label": [1, 0, 1],
            "rfm_score": [12, None, 5],
            "has_prior_purchase": [1, 0, 1],
            "views": [9, 9, 9],
        }
    )
    out = prop.test_score_table(test, np.array([0.2, 0.9, 0.5]))
    assert out.columns == [
        "user_id",
        "probability",
        "decile",
        "label",
        "rfm_score",
        "has_prior_purchase",
    ]
    assert out.select("user_id", "probability", "label").rows() == [
        (1, 0.9, 0),
        (2, 0.5, 1),
        (3, 0.2, 1),
    ]


def test_lgb_params_are_the_sections_lightgbm_keys_with_per_tree_subsampling():
    p = PropensityParams(num_leaves=15, learning_rate=0.1, subsample=0.5)
    got = p.lgb_params()
    assert got == {
        "n_estimators": 2000,
        "learning_rate": 0.1,
        "num_leaves": 15,
        "min_child_samples": 100,
        "subsample": 0.5,
        "colsample_bytree": 0.8,
        "reg_lambda": 1.0,
        "min_data_per_group": 200,
        "cat_smooth": 50.0,
        "subsample_freq": 1,  # LightGBM ignores subsample without it
    }
    import lightgbm as lgb

    assert set(got) <= set(lgb.LGBMClassifier().get_params()) | {"min_data_per_group", "cat_smooth"}


def test_as_pandas_learns_levels_in_training_and_keeps_them_when_scoring():
    train = pl.DataFrame({"events": [1, 2, 3], "primary_category": ["a", "b", "a"]})
    x = propensity.as_pandas(train, ["events", "primary_category"])
    assert list(x["primary_category"].cat.categories) == ["a", "b"]
    assert x["events"].tolist() == [1, 2, 3]
    later = pl.DataFrame({"events": [4, 5], "primary_category": ["b", "new"]})
    y = propensity.as_pandas(
        later, ["events", "primary_category"], {"primary_category": ["a", "b"]}
    )
    assert list(y["primary_category"].cat.categories) == ["a", "b"]
    assert y["primary_category"].tolist()[0] == "b" and y["primary_category"].isna().tolist() == [
        False,
        True,
    ]  # a level unseen in training is missing
    # the frames LightGBM gets equal pandas' own categoricals, nulls and unseen levels included
    import pandas as pd

    train = pl.DataFrame({"events": [1, 2, 3, 4], "primary_category": ["é", None, "b", "a"]})
    expected = train.to_pandas().astype({"primary_category": "category"})
    pd.testing.assert_frame_equal(
        propensity.as_pandas(train, ["events", "primary_category"]), expected
    )
    levels = list(expected["primary_category"].cat.categories)
    later = pl.DataFrame({"events": [5, 6, 7], "primary_category": ["new", None, "é"]})
    expected = later.to_pandas()
    expected["primary_category"] = pd.Categorical(
        expected["primary_category"].where(expected["primary_category"].isin(levels)),
        categories=levels,
    )
    got = propensity.as_pandas(later, ["events", "primary_category"], {"primary_category": levels})
    pd.testing.assert_frame_equal(got, expected)


def test_split_times_reads_the_end_as_utc_and_names_a_bad_one():
    import datetime as dt

    events = ibis.memtable(pl.DataFrame({"event_time": [dt.datetime(2020, 1, 1, tzinfo=dt.UTC)]}))
    cutoff, end = propensity.split_times(events, label_days=10, end="2020-02-01")
    assert end == dt.datetime(2020, 2, 1, tzinfo=dt.UTC) and cutoff == end - dt.timedelta(days=10)
    with pytest.raises(ValueError, match="propensity.end: expected an ISO date"):
        propensity.split_times(events, end="1 Feb 2020")
