"""The profile pipeline over Parquet on either engine: DuckDB on one machine, Apache Spark on a cluster.

`engine` (the two backends, batch functions, broadcasts) ← `derive` (text tables, embeddings, sentiment, scores,
clusters) ← `build` (the build itself, `export` from a store, `read_profiles`).
"""
from .build import build, export, read_profiles
from .engine import ENGINES, connect, spark_session

__all__ = ["ENGINES", "build", "connect", "export", "read_profiles", "spark_session"]
