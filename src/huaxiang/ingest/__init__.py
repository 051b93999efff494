from .adapters import FORMATS, parse_mapping
from .pipeline import IngestReport, ingest_file

__all__ = ["FORMATS", "IngestReport", "ingest_file", "parse_mapping"]
