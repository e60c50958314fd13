"""Expressions from params are parsed and checked, never executed as Python."""

from __future__ import annotations

import polars as pl
import pytest

from customer_intel import sqlexpr

DF = pl.DataFrame(
    {
        "year_birth": [1950, 1990, None, 1893],
        "income": [100_000.0, 700_000.0, 30_000.0, 50_000.0],
        "mnt_a": [1, 2, 3, 4],
        "mnt_b": [3, 4, 5, 6],
        "marital": ["Married", "Single", "Together", "Widow"],
    }
)


def test_derived_columns_and_filters_compute_as_sql_would():
    out = sqlexpr.polars_columns(
        DF,
        {
            "age": "2021 - year_birth",
            "spent": "mnt_a + mnt_b",
            "alone": "CASE WHEN marital IN ('Married', 'Together') THEN 0 ELSE 1 END",
        },
        where="segmentation.derived",
    )
    assert out["age"].to_list() == [71, 31, None, 128]
    assert out["spent"].to_list() == [4, 6, 8, 10]
    assert out["alone"].to_list() == [0, 1, 0, 1]
    kept = sqlexpr.polars_filter(
        out, ["age < 90 AND income < 600000"], where="segmentation.filters"
    )
    assert kept["mnt_a"].to_list() == [1]  # NULL age is not kept: a filter never guesses


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os').system('ls')", "not allowed"),
        ("(SELECT 1) > 0", "SUBQUERY"),
        ("age > 1", r"unknown column\(s\) \['age'\]"),
        ("income +", "cannot parse"),
        ("", "expected a SQL expression"),
        ("read_csv('x') IS NULL", "not allowed"),
    ],
)
def test_bad_expressions_are_rejected_naming_the_key(expression, message):
    with pytest.raises(sqlexpr.ExpressionError, match=rf"^segmentation\.filters\[0\]: .*{message}"):
        sqlexpr.polars_filter(DF, [expression], where="segmentation.filters")


def test_a_filter_must_be_a_condition():
    with pytest.raises(sqlexpr.ExpressionError, match="is not a condition"):
        sqlexpr.check("mnt_a + mnt_b", DF.columns, where="f", boolean=True)


def test_checked_expression_renders_for_an_engine():
    tree = sqlexpr.check(
        "income BETWEEN 1 AND 5 OR marital LIKE 'M%'", DF.columns, where="f", boolean=True
    )
    assert sqlexpr.to_sql(tree) == "income BETWEEN 1 AND 5 OR marital LIKE 'M%'"


#: one expression per function or construct the checker allows
ALLOWED_EXAMPLES = [
    "ABS(mnt_a - 10)",
    "ROUND(income / 3, 1)",
    "FLOOR(income / 7)",
    "CEIL(income / 7)",
    "LN(income)",
    "LN(income) / LN(10)",
    "SQRT(income)",
    "POW(mnt_a, 2)",
    "LOWER(marital)",
    "UPPER(marital)",
    "LENGTH(marital)",
    "SUBSTRING(marital, 1, 3)",
    "CONCAT(marital, '-x')",
    "SPLIT_PART(marital, 'a', 1)",
    "SPLIT_PART(CONCAT(marital, '.x.y'), '.', 3)",
    "COALESCE(year_birth, 1970)",
    "LEAST(mnt_a, mnt_b)",
    "GREATEST(mnt_a, mnt_b)",
    "CASE WHEN mnt_a > 2 THEN 'hi' ELSE 'lo' END",
    "CAST(mnt_a AS DOUBLE) / 2",
    "TRY_CAST(marital AS INTEGER)",
    "mnt_a % 2",
    "mnt_a // 2",
    "YEAR(CURRENT_DATE) - year_birth",
    "MONTH(CURRENT_DATE) + DAY(CURRENT_DATE) + mnt_a",
    "marital ILIKE 'm%'",
    "mnt_a BETWEEN 2 AND 3",
    "year_birth IS NULL",
    "NOT (mnt_a IN (1, 2))",
]


@pytest.mark.parametrize("expression", ALLOWED_EXAMPLES)
def test_what_the_checker_allows_both_engines_run(expression):
    """The checker and the engines agree: what passes validation runs in Polars (ingest and
    segmentation expressions) and in DuckDB (expressions over the warehouse), and both give the
    same values."""
    import duckdb

    tree = sqlexpr.check(expression, DF.columns, where="x")
    sql = sqlexpr.to_sql(tree)
    ours = DF.select(pl.sql_expr(sql).alias("v"))["v"]
    con = duckdb.connect()
    con.register("df", DF.to_arrow())
    theirs = pl.from_arrow(con.sql(f"SELECT {sql} AS v FROM df").arrow())["v"]
    con.close()
    assert ours.to_list() == pytest.approx(theirs.to_list(), nan_ok=True) or (
        ours.cast(pl.String).to_list() == theirs.cast(pl.String).to_list()
    )


def test_date_diff_is_refused_at_validation_with_a_way_out():
    with pytest.raises(sqlexpr.ExpressionError, match=r"^segmentation\.derived\.age: .*DATE_DIFF"):
        sqlexpr.check("DATE_DIFF('day', a, b)", ["a", "b"], where="segmentation.derived.age")


@pytest.mark.parametrize("index", ["0", "-1", "mnt_a"])
def test_split_part_needs_a_positive_literal_part(index):
    # DuckDB counts a negative part from the end; the engines disagree there, so it is refused
    with pytest.raises(sqlexpr.ExpressionError, match=r"^m\.derived\.c: .*SPLIT_PART needs"):
        sqlexpr.check(f"SPLIT_PART(marital, '.', {index})", DF.columns, where="m.derived.c")
