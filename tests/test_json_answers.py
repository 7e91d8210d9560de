"""Every JSON answer is encoded by streamer.http.json_answers (orjson, issue 15): the same meaning
as aiohttp's json.dumps gave, through a real server and on its own."""

from __future__ import annotations

import collections
import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.http.json_answers import dumps
from streamer.http.keys import CATALOG
from tests.conftest import first_track, make_user

TEXT = "Ünïcödé — 東京の夜 «ёж» 🎵 ĳ ǅ"  # 2-, 3- and 4-byte UTF-8, a ligature, a title-case digraph


async def test_non_ascii_text_and_floats_round_trip_exactly_through_a_real_server(demo_server):
    app = demo_server.server.app
    admin = await make_user(app, "root", "admin")
    track = await first_track(demo_server)
    resp = await demo_server.patch(f"/api/v1/tracks/{track['id']}", json={"title": TEXT, "artist": TEXT[:7]},
                                   headers=admin)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"

    stored = await app[CATALOG].track(track["id"])
    resp = await demo_server.get(f"/api/v1/tracks/{track['id']}")
    raw = await resp.read()
    assert resp.status == 200 and resp.headers["Content-Type"] == "application/json; charset=utf-8"
    assert TEXT.encode("utf-8") in raw  # raw UTF-8, not \u escapes
    answer = json.loads(raw.decode("utf-8"))
    assert answer["title"] == TEXT and answer["artist"] == TEXT[:7]
    assert isinstance(answer["duration"], float) and answer["duration"] == stored["duration"]
    assert {k: answer[k] for k in stored} == stored  # every field as the catalog holds it, floats to the bit

    # The text searched for comes back as it was sent, in a list answer and in an error's message.
    found = await (await demo_server.get("/api/v1/search", params={"q": "東京の夜"})).json()
    assert found["q"] == "東京の夜" and [t["title"] for t in found["tracks"]] == [TEXT]
    resp = await demo_server.get("/api/v1/tracks/ÿ東京")
    assert resp.status == 404 and resp.headers["Content-Type"] == "application/json; charset=utf-8"
    assert "ÿ東京" in (await resp.json())["error"]["message"]


def test_what_orjson_refuses_is_encoded_as_before():
    old = json.dumps  # what aiohttp's web.json_response used
    Pair = collections.namedtuple("Pair", "a b")

    class Seconds(float):
        pass

    for value in ({"big": 2**64, "small": -2**63 - 1},  # beyond orjson's 64 bits
                  {"name": "café \udcff.flac"},  # a lone surrogate (os.fsdecode of a byte that is not UTF-8)
                  {1: "one", None: "none", 2.5: "x"},  # keys that are not strings
                  {"pair": Pair(1, "b"), "duration": Seconds(1.25)}):  # subclasses orjson leaves out
        assert json.loads(dumps(value)) == json.loads(old(value)), value
    assert dumps({"name": "\udcff"}) == old({"name": "\udcff"}).encode()  # escaped ASCII, valid JSON
    assert dumps({"d": Seconds(0.1)}) == b'{"d":0.1}' and type(json.loads(dumps(Seconds(2.0)))) is float


def test_not_a_number_is_null_instead_of_invalid_json():
    # json.dumps wrote NaN / Infinity, which no JSON reader has to take (a browser's JSON.parse refuses them).
    assert json.loads(dumps({"a": math.nan, "b": math.inf, "c": -math.inf})) == {"a": None, "b": None, "c": None}


def test_what_json_cannot_encode_still_fails():
    for value in ({"s": {1, 2}}, {"b": b"bytes"}, object()):
        try:
            dumps(value)
        except TypeError:
            continue
        raise AssertionError(f"{value!r} was encoded")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_every_value_means_what_json_dumps_meant(value):
    """Any value of JSON's types (integers of any size, every finite float, any text, surrogates
    included) reads back from our bytes as from json.dumps's: equal, floats to the bit."""
    ours, theirs = json.loads(dumps(value)), json.loads(json.dumps(value))
    assert ours == theirs and repr(ours) == repr(theirs)
