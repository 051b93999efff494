from .adapters import FORMATS, parse_mapping
from .pipeline import IngestReport, ingest_file, ingest_records

__all__ = ["FORMATS", "IngestReport", "ingest_file", "ingest_records", "parse_mapping"]
