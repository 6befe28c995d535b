"""Job input: CSV streams and JSON bodies parsed and validated into Operations."""

from jobs.input.csv_parse import CsvParse, parse_csv
from jobs.input.json_parse import JsonParse, parse_json, read_json_job
from jobs.input.rules import Limits

__all__ = ["CsvParse", "JsonParse", "Limits", "parse_csv", "parse_json", "read_json_job"]
