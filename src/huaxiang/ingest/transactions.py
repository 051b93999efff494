"""A transaction file read for `huaxiang clv`: one row per (customer, day) with the day's total value.

The file goes through the ingest adapters (`cdnow`, `online-retail`, or `csv` with the columns
`customer_id,date,value`) into an in-memory store, so that it is parsed and validated exactly as `huaxiang ingest`
would; its order lines are then summed per customer and day (purchases on one day are one transaction, the
convention of the published CDNOW figures). Rows left out are counted by reason: the quarantine's, and
cancellations (Online Retail invoices `C…`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import pandas as pd

from ..errors import HuaxiangError
from ..store import ensure_tables
from .pipeline import ingest_file

FORMATS = ("cdnow", "online-retail", "csv")
CSV_COLUMNS = {"user_id": "customer_id", "ts": "date", "amount": "value"}  # canonical order column -> csv column
# why a quarantined order line is left out, by the field it failed on
SKIP_REASONS = {"user_id": "no customer id", "ts": "unreadable date", "amount": "unreadable value"}
CANCELLED = "cancellation or return (invoice 'C…')"


@dataclass
class Transactions:
    """One row per (customer, day): `customer_id`, `date`, `value`; plus what was left out and why."""
    frame: pd.DataFrame
    skipped: dict[str, int] = field(default_factory=dict)


def read_transactions(path: str, fmt: str) -> Transactions:
    """cdnow: whitespace `customer_id [customer_index] YYYYMMDD quantity value`; online-retail: UCI Online Retail II
    CSV (value = Quantity × Price per invoice line); csv: header with `customer_id,date,value`."""
    if fmt not in FORMATS:
        raise HuaxiangError(f"unknown transaction format {fmt!r}; choose one of {', '.join(FORMATS)}")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    ensure_tables(con)
    if fmt == "csv":
        ingest_file(con, path, "csv", table="orders", mapping=CSV_COLUMNS)
    else:
        ingest_file(con, path, fmt)
    skipped: dict[str, int] = {}
    for fld, reason, n in con.execute("""SELECT field, any_value(reason), count(*) FROM quarantine
            WHERE coalesce(target, 'orders') = 'orders' GROUP BY field ORDER BY min(line)""").fetchall():
        why = SKIP_REASONS.get(fld, reason)
        skipped[why] = skipped.get(why, 0) + n
    cancelled = con.execute("SELECT count(*) FROM orders WHERE upper(trim(invoice)) LIKE 'C%'").fetchone()[0]
    if cancelled:
        skipped[CANCELLED] = cancelled
    frame = con.execute("""SELECT user_id AS customer_id, date_trunc('day', ts) AS date, sum(amount) AS value
        FROM orders WHERE invoice IS NULL OR NOT upper(trim(invoice)) LIKE 'C%'
        GROUP BY ALL ORDER BY customer_id, date""").df()
    con.close()
    frame["date"] = frame["date"].astype("datetime64[us]")
    return Transactions(frame, skipped)
