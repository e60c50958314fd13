"""SQL expressions from params files: parsed and checked, never executed as Python.

Params may hold row filters (``"age < 90 AND income < 600000"``) and derived columns
(``"2021 - year_birth"``). Each is parsed by sqlglot, checked against an allow-list of node
types and functions and against the columns it may reference, and only then handed to an
engine: Polars (``pl.sql_expr``) or Ibis/SQL (as text re-rendered from the checked tree).
Nothing from a params file reaches ``eval``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import sqlglot
from sqlglot import exp

if TYPE_CHECKING:  # polars only where a frame is filtered: params validation needs no engine
    import polars as pl

__all__ = ["ExpressionError", "check", "to_sql", "polars_filter", "polars_columns"]


class ExpressionError(ValueError):
    """An expression from params is not valid; the message names where it came from."""


# Node types an expression may contain: values, column references, arithmetic, comparisons,
# boolean logic, CASE, CAST, IN/BETWEEN/LIKE, and the functions below. No sub-queries,
# no statements, no table functions.
_ALLOWED = (
    exp.Column,
    exp.Identifier,
    exp.Literal,
    exp.Boolean,
    exp.Null,
    exp.Paren,
    exp.Neg,
    exp.Not,
    exp.And,
    exp.Or,
    exp.Add,
    exp.Sub,
    exp.Mul,
    exp.Div,
    exp.IntDiv,
    exp.Mod,
    exp.EQ,
    exp.NEQ,
    exp.GT,
    exp.GTE,
    exp.LT,
    exp.LTE,
    exp.Is,
    exp.In,
    exp.Between,
    exp.Like,
    exp.ILike,
    exp.Case,
    exp.If,
    exp.Cast,
    exp.TryCast,
    exp.DataType,
    exp.DataTypeParam,
    exp.Tuple,
    exp.Coalesce,
    exp.Abs,
    exp.Round,
    exp.Floor,
    exp.Ceil,
    exp.Ln,  # LOG is not: DuckDB's LOG(x) is base 10, Polars' needs a base; use LN(x) / LN(b)
    exp.Sqrt,
    exp.Pow,
    exp.Lower,
    exp.Upper,
    exp.Length,
    exp.Substring,
    exp.Concat,
    exp.SplitPart,  # only with a positive literal index (checked below): both engines agree there
    exp.Year,
    exp.Month,
    exp.Day,
    exp.CurrentDate,
    exp.Least,
    exp.Greatest,
    exp.Var,
    exp.TimeUnit,
)


def check(
    expression: str,
    columns: Iterable[str],
    *,
    where: str,
    boolean: bool = False,
) -> exp.Expression:
    """Parse one SQL expression and check it is safe and refers only to known columns.

    Parameters
    ----------
    expression
        The SQL text from params, e.g. ``"age < 90 AND income < 600000"``.
    columns
        Names the expression may reference.
    where
        Where it came from, for error messages (e.g. ``"segmentation.filters[0]"``).
    boolean
        Require a predicate (comparison or boolean logic), as for a row filter.

    Returns
    -------
    sqlglot.exp.Expression
        The parsed, checked tree.

    Raises
    ------
    ExpressionError
        Naming ``where``, the expression and the problem.
    """
    if not isinstance(expression, str) or not expression.strip():
        raise ExpressionError(f"{where}: expected a SQL expression, got {expression!r}")
    try:
        tree = sqlglot.parse_one(expression, dialect="duckdb", into=exp.Condition)
    except (sqlglot.errors.ParseError, sqlglot.errors.TokenError) as e:
        raise ExpressionError(f"{where}: cannot parse {expression!r}: {e}") from None
    for node in tree.walk():
        if isinstance(node, exp.DateDiff):
            # Polars' SQL (which evaluates the filters and derived columns of ingest and
            # segmentation) has no date difference function, so the checker refuses what the
            # engine could not run rather than letting it fail inside a stage
            raise ExpressionError(
                f"{where}: {expression!r} uses DATE_DIFF, which the engines of params "
                "expressions do not all support; use YEAR(), MONTH() and DAY() arithmetic "
                "(e.g. 'YEAR(a) - YEAR(b)') or compute the column before the data is read"
            )
        if isinstance(node, exp.SplitPart):
            index = node.args.get("part_index")
            if not (isinstance(index, exp.Literal) and index.is_int and int(index.name) >= 1):
                raise ExpressionError(
                    f"{where}: {expression!r}: SPLIT_PART needs a positive whole-number part "
                    "(1 is the first); other indices differ between the engines"
                )
        if not isinstance(node, _ALLOWED):
            raise ExpressionError(
                f"{where}: {expression!r} uses {node.key.upper()} ({node.sql()!r}), which is not "
                "allowed in params expressions (only arithmetic, comparisons, AND/OR/NOT, "
                "IN, BETWEEN, LIKE, CASE, CAST and simple functions)"
            )
    known = set(columns)
    unknown = sorted({c.name for c in tree.find_all(exp.Column)} - known)
    if unknown:
        raise ExpressionError(
            f"{where}: {expression!r} refers to unknown column(s) {unknown}; "
            f"available: {sorted(known)}"
        )
    if boolean and not isinstance(
        tree.unnest(),
        exp.Predicate | exp.Connector | exp.Not | exp.Boolean | exp.Is | exp.In | exp.Between,
    ):
        raise ExpressionError(
            f"{where}: {expression!r} is not a condition (expected e.g. 'age < 90')"
        )
    return tree


def to_sql(tree: exp.Expression, dialect: str = "duckdb") -> str:
    """Render a checked expression as SQL text for an engine."""
    return tree.sql(dialect=dialect)


def polars_filter(
    df: pl.DataFrame | pl.LazyFrame,
    expressions: Iterable[str],
    *,
    where: str,
    keep_unknown: bool = False,
) -> pl.DataFrame | pl.LazyFrame:
    """Keep the rows where every checked boolean expression holds.

    A condition that is NULL (it reads a missing value) counts as false, as in SQL's WHERE,
    unless ``keep_unknown``: then the row is kept, for a later missing-value rule to count.
    """
    import polars as pl

    cols = df.collect_schema().names()
    for i, text in enumerate(expressions):
        tree = check(text, cols, where=f"{where}[{i}]", boolean=True)
        df = df.filter(pl.sql_expr(to_sql(tree)).fill_null(keep_unknown))
    return df


def polars_columns(
    df: pl.DataFrame | pl.LazyFrame, derived: Mapping[str, str], *, where: str
) -> pl.DataFrame | pl.LazyFrame:
    """Add derived columns ``{name: expression}``, in order (later ones may use earlier ones)."""
    import polars as pl

    for name, text in derived.items():
        cols = df.collect_schema().names()
        tree = check(text, cols, where=f"{where}.{name}")
        df = df.with_columns(pl.sql_expr(to_sql(tree)).alias(name))
    return df
