"""Bad input against the live service and the in-memory parsers: schemathesis generates requests from the
published OpenAPI (valid and invalid), hypothesis generates records and stream messages. No 500s, no crash,
and no valid event lost."""
from __future__ import annotations

import json
import string

import duckdb
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from huaxiang import store
from huaxiang.errors import HuaxiangError
from huaxiang.models.seqrec.data import read_sequences
from huaxiang.ingest import ingest_records
from huaxiang.stream import Message, decode
from conftest import call

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_the_schema_allows_or_forbids_gets_a_500(server, mode):
    base, keys = server
    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    seen = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=25, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def fuzz(case):
            response = case.call(base_url=base, headers={"X-API-Key": keys["admin"]})
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:300]}"
            seen.append(response.status_code)

        try:
            fuzz()
        except Unsatisfiable:  # nothing in this operation can be made invalid (e.g. /healthz)
            assert mode == GenerationMode.NEGATIVE
    assert len(seen) > 50 and any(s < 300 for s in seen) and any(400 <= s < 500 for s in seen)


HOSTILE = ["' OR 1=1; --", "x'); DROP TABLE events; --", "\x00\x01", "𝕏" * 50, "%00", "../../etc/passwd",
           "<script>alert(1)</script>", "a" * 50_000]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_strings_get_4xx_with_a_message(server, text):
    base, keys = server
    from urllib.parse import quote
    status, body = call(base, "GET", f"/v1/users/{quote(text[:2000], safe='')}/profile", key=keys["read"])
    assert status == 404 and ("unknown user" in body["detail"] or "no route GET" in body["detail"])
    status, body = call(base, "GET", f"/v1/search?q={quote(text, safe='')}", key=keys["read"])
    assert status == 200 or (400 <= status < 500 and body["detail"])  # a 100 kB URL: refused by the HTTP layer
    status, body = call(base, "POST", "/v1/events", key=keys["write"],
                        body={"events": [{"user_id": text, "item_id": text, "type": "view", "ts": text}]})
    assert status == 200 and body["quarantined"] == 1 and body["rejected"][0]["reason"]


def test_invalid_utf8_and_wrong_shapes_get_4xx(server):
    base, keys = server
    status, body = call(base, "POST", "/v1/events", key=keys["write"], body=b'{"events": ["\xff\xfe"]}')
    assert status == 400 and "not JSON" in body["detail"]
    for shape in (b"[]", b"null", b'"events"', b'{"events": {}}'):
        status, body = call(base, "POST", "/v1/events", key=keys["write"], body=shape)
        assert status == 422 and body["detail"]


# --- the parsers behind the service, under hypothesis ---

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                        max_size=3), max_leaves=8)
valid_event = st.builds(lambda u, i, t, ts: {"user_id": f"u{u}", "item_id": f"i{i}", "type": t,
                                             "ts": f"2024-01-{ts:02d}T10:00:00"},
                        st.integers(0, 20), st.integers(0, 50), st.sampled_from(["view", "cart", "fav", "buy"]),
                        st.integers(1, 28))
junk_event = st.one_of(json_values, st.builds(lambda d, u: {**d, "user_id": u}, st.dictionaries(
    st.sampled_from(["item_id", "type", "ts", "price", "event_id"]), json_values), json_values))


@SETTINGS
@given(batch=st.lists(st.tuples(st.booleans(), valid_event, junk_event), max_size=12))
def test_records_keep_every_valid_event_and_name_every_bad_one(batch):
    records = [good if keep else junk for keep, good, junk in batch]
    valid = [r for keep, r, _ in batch if keep]
    for n, r in enumerate(valid):
        r["event_id"] = f"e{n}"
    con = duckdb.connect()
    store.ensure_tables(con)
    report = ingest_records(con, records, "fuzz")  # must not raise
    stored = {e for (e,) in con.execute("SELECT event_id FROM events").fetchall()}
    assert {r["event_id"] for r in valid} <= stored  # no valid event lost
    lines = {n for (n,) in con.execute("SELECT line FROM quarantine WHERE source = 'fuzz'").fetchall()}
    assert report.added["events"] if valid else True
    assert len(stored) + report.quarantined == len(records) and len(lines) == report.quarantined


class Source:
    def default_event_id(self, message):
        return f"m:{message.id}"


@SETTINGS
@given(payloads=st.lists(st.one_of(st.binary(max_size=60), st.none(), st.text(max_size=60).map(str.encode),
                                   json_values.map(lambda v: json.dumps(v).encode())), max_size=8))
def test_any_stream_message_decodes_to_a_record_or_a_named_reject(payloads):
    records = decode(Source(), [Message(str(n), p) for n, p in enumerate(payloads)])
    assert len(records) == len(payloads)
    for n, r in enumerate(records):
        assert (isinstance(r, dict) and r["event_id"]) or (isinstance(r, str) and r.startswith(f"message {n}:"))


@SETTINGS
@given(text=st.text(alphabet=string.printable + "用户", max_size=300))
def test_sequence_files_parse_or_fail_with_a_clear_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("seq") / "seq.txt"
    path.write_text(text, encoding="utf-8")
    try:
        seqs = read_sequences(str(path), min_length=1)
    except HuaxiangError as exc:
        assert str(exc)
    else:
        assert len(seqs.users) == len(seqs.seqs) and all(seqs.seqs) and len(set(seqs.users)) == len(seqs.users)
