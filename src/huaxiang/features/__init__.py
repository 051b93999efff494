"""Behaviour features as pure functions: Ibis table expressions in, Ibis table expressions out.

Written against Ibis so that the same definitions run on DuckDB (default) and on Spark.
Timestamps are compared as epoch seconds, not engine-specific intervals, for the same reason.
"""
