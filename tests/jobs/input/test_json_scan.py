"""A JSON job body read without building it whole: json's own words for syntax errors, limits checked
before anything is built, memory bounded by the body's text and one operation."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from jobs.input import Limits, parse_json, read_json_job
from jobs.input.json_scan import MAX_VALUE_CHARS, operation_items, scan_body
from jobs.models import FieldError, InputRejected
from jobs.skus import SkuCatalog

CORPUS = Path(__file__).parent.parent.parent / "corpus"


@pytest.fixture(scope="module")
def catalog() -> SkuCatalog:
    """The corpus tenant's catalog."""
    return SkuCatalog.from_graph(json.loads((CORPUS / "subscribed_skus.json").read_text(encoding="utf-8"))["value"])


MALFORMED = [
    "", "   ", "{", "}", "[", "{,}", '{"a":1,}', '{"a" 1}', '{"a":1 "b":2}', "{a:1}", '{"a":1}x', '{"a":',
    '{"a":"x', '{"operations":[1 2]}', '{"operations":[1,]}', '{"operations":[,]}', '{"operations":[{"u":}]}',
    '{"operations":[{"u":"a\\qb"}]}', '{"operations":[{"u":"a\nb"}]}', '{"operations":[{"u":1]}',
    '{"operations":[}', '{"tenant":tru}', '{"tenant":"x",}', '\n\n  {"tenant":\n "x" "y"}', '[1,2',
    '{"operations":[{"a":[1,2}]}', '{"operations":[{}]', '{"operations":[{}]}}', "nul", '"abc',
]


def body_error(text: str, limits: Limits = Limits()) -> FieldError:
    with pytest.raises(InputRejected) as exc:
        scan_body(text, limits.max_rows)
    assert len(exc.value.errors) == 1
    return exc.value.errors[0]


@pytest.mark.parametrize("text", MALFORMED)
def test_syntax_errors_are_worded_and_placed_as_json_does(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    error = expected.value
    assert body_error(text).message == (
        f"the body is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}")


def test_a_valid_body_is_measured_and_its_operations_read_one_at_a_time() -> None:
    operations = [{"user": f"u{i}@contoso.example", "addLicenses": [{"sku": "EMS", "disabledPlans": []}]}
                  for i in range(5)]
    # A repeated name keeps its last value, as in json.loads.
    text = ('{"dry_run": true, "operations": [{"stale": 1}], "tenant": "sim",\n "operations ": 1, "callback_url":'
            f' null, "operations": {json.dumps(operations, indent=1)}}}')
    assert json.loads(text)["operations"] == operations
    layout = scan_body(text, max_rows=5)
    assert layout.fields == {"dry_run": True, "tenant": "sim", "operations ": 1, "callback_url": None}
    assert layout.operations == 5
    assert list(operation_items(text, layout)) == operations
    assert scan_body('{"operations": {"a": 1}}', 5).fields == {"operations": {"a": 1}}


def test_the_count_is_checked_before_any_operation_is_built() -> None:
    text = '{"tenant": "sim", "operations": [' + ",".join(["{}"] * 7) + "]}"
    assert body_error(text, Limits(max_rows=6)) == FieldError(
        "operations has 7 items, more than the limit of 6 per job; split it into several jobs", column="operations")


def test_one_operation_or_field_may_not_be_longer_than_the_limit() -> None:
    long_op = '{"user": "' + "x" * MAX_VALUE_CHARS + '"}'
    error = body_error('{"tenant": "sim", "operations": [{}, ' + long_op + "]}")
    assert error == FieldError("operations[1] is longer than 65,536 characters, the limit for one operation", 2,
                               "operations[1]")
    error = body_error('{"pad": [' + "0," * MAX_VALUE_CHARS + '0], "tenant": "sim"}')
    assert error.column == "pad"
    assert error.message.endswith('the limit for a field other than "operations"')
    error = body_error("[" + "{}," * MAX_VALUE_CHARS + "{}]")
    assert error == FieldError("the body must be an object, not an array")
    error = body_error('{"' + "k" * MAX_VALUE_CHARS + '": 1}')
    assert error.message.startswith("a field name is longer than")


def test_a_number_too_long_to_convert_is_a_syntax_error_not_a_crash() -> None:
    error = body_error('{"tenant": ' + "1" * 5000 + "}")
    assert error.message == "the body is not valid JSON: Number too long to convert at line 1, column 12"


def test_depth_is_checked_inside_fields_and_operations() -> None:
    deep = "[" * 32 + "]" * 32  # at depth 2: its innermost array is at depth 33
    error = body_error('{"tenant": "sim", "pad": ' + deep + "}")
    assert error.message.startswith("the JSON is nested deeper than 32 levels (at pad[0]")
    assert error.row is None
    scan_body('{"tenant": "sim", "pad": ' + deep[1:-1] + "}", 5)  # 32 levels: allowed
    error = body_error('{"operations": [{}, {"extra": {"a": ' + "[" * 29 + "]" * 29 + "}}]}")
    assert error.row == 2
    assert error.column == "operations[1].extra.a" + "[0]" * 28


def test_a_body_of_empty_objects_costs_its_text_not_80_times_it(catalog: SkuCatalog) -> None:
    """The review's body: `{}` items past the row limit. json.loads alone took ~24 bytes per byte."""
    n = 60_000
    body = b'{"tenant": "sim", "operations": [' + b"{}," * (n - 1) + b"{}]}"
    tracemalloc.start()
    try:
        with pytest.raises(InputRejected) as exc:
            parse_json(body, {"sim": catalog}.__getitem__, Limits(max_rows=1000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert exc.value.errors[0].message.startswith(f"operations has {n:,} items")
    assert peak < 2 * len(body), f"peak {peak:,} bytes for a body of {len(body):,}"


def test_a_valid_body_costs_its_text_and_a_chunk(catalog: SkuCatalog) -> None:
    n = 3_000
    ops = ",".join(f'{{"user": "u{i}@contoso.example", "removeLicenses": ["EMS"], "extra": {{"id": "E{i}"}}}}'
                   for i in range(n))
    body = ('{"tenant": "sim", "operations": [' + ops + "]}").encode()
    tracemalloc.start()
    try:
        tenant, _, _ = parse_json(body, {"sim": catalog}.__getitem__, Limits())
        tracemalloc.reset_peak()
        parse = read_json_job(body, {"sim": catalog}.__getitem__, Limits())
        count = sum(1 for _ in parse)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tenant, count, parse.total_errors) == ("sim", n, 0)
    assert peak < 3 * len(body), f"peak {peak:,} bytes for a body of {len(body):,}"
