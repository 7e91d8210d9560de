"""The Subsonic protocol and sign-in (issue 13, sections 1 and 2), against a real server on
127.0.0.1: answers in XML, JSON and JSONP with the same tree, GET and POST alike, every way of
signing in and each error code, and the two real client libraries from PyPI."""

from __future__ import annotations

import asyncio
import hashlib
import json

import libopensonic
import libsonic
import pytest
from lxml import etree

from media import listeners
from streamer.http.auth import password_key
from streamer.http.keys import AUTH, CATALOG

NS = "{http://subsonic.org/restapi}"
PASSWORD = "s3cret pass"


@pytest.fixture
async def server(demo_server):
    app = demo_server.server.app
    _, token = await app[CATALOG].db.write(listeners.add_user, "ann", "admin")
    await app[CATALOG].db.write(listeners.set_password, "ann", PASSWORD, app[AUTH].password_key)
    demo_server.token = token
    return demo_server


def _salted(password: str, salt: str = "c0ffee") -> dict[str, str]:
    return {"u": "ann", "t": hashlib.md5((password + salt).encode()).hexdigest(), "s": salt}


def _base(**extra) -> dict[str, str]:
    return {"v": "1.16.1", "c": "tests", **extra}


async def _json(client, name: str, params: dict, method: str = "GET") -> dict:
    params = {**params, "f": "json"}
    if method == "GET":
        resp = await client.get(f"/rest/{name}", params=params)
    else:
        resp = await client.post(f"/rest/{name}.view", data=params)
    assert resp.status == 200, await resp.text()
    return (await resp.json())["subsonic-response"]


async def test_every_way_of_signing_in_and_each_refusal(server):
    client = server
    ok = [{"u": "ann", "p": PASSWORD}, {"u": "ann", "p": "enc:" + PASSWORD.encode().hex()}, _salted(PASSWORD),
          {"apiKey": server.token}]
    for credentials in ok:
        body = await _json(client, "ping", _base(**credentials))
        assert body["status"] == "ok" and body["openSubsonic"] is True and body["version"] == "1.16.1"
        assert body["type"] == "streamer" and body["serverVersion"]
    refused = [({"u": "ann", "p": "wrong"}, 40), (_salted("wrong"), 40), ({"u": "bob", "p": PASSWORD}, 40),
               ({}, 10), ({"u": "ann"}, 10), ({"u": "ann", "t": "x"}, 10), ({"apiKey": "nope.nope"}, 44),
               ({"apiKey": server.token, "u": "ann"}, 43), ({"u": "ann", "p": PASSWORD, "t": "x", "s": "y"}, 43)]
    for credentials, code in refused:
        body = await _json(client, "ping", _base(**credentials))
        assert body["status"] == "failed" and body["error"]["code"] == code, (credentials, body)
        assert body["error"]["message"]


async def test_token_sign_in_turned_off_is_error_41(aiohttp_client, demo_library, tmp_path):
    import shutil

    from streamer import create_app
    from tests.conftest import settings_for, wait_for_scan

    shutil.copytree(demo_library, tmp_path / "music")
    app = create_app(settings_for(tmp_path / "music", tmp_path / "data", subsonic_token_auth=False))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    await app[CATALOG].db.write(listeners.add_user, "ann", "listener")
    await app[CATALOG].db.write(listeners.set_password, "ann", PASSWORD, app[AUTH].password_key)
    assert (await _json(client, "ping", _base(**_salted(PASSWORD))))["error"]["code"] == 41
    assert (await _json(client, "ping", _base(u="ann", p=PASSWORD)))["status"] == "ok"


async def test_xml_json_and_jsonp_carry_one_tree_and_post_answers_as_get(server):
    client = server
    params = _base(u="ann", p=PASSWORD)
    for name in ("ping", "getLicense", "getMusicFolders", "getOpenSubsonicExtensions", "getUser", "getUsers",
                 "getScanStatus", "tokenInfo"):
        query = {**params, "username": "ann"}
        as_json = await _json(client, name, query)
        assert as_json == await _json(client, name, query, method="POST"), name
        resp = await client.get(f"/rest/{name}.view", params=query)
        assert resp.status == 200 and resp.content_type == "text/xml"
        root = etree.fromstring(await resp.read())
        assert root.tag == f"{NS}subsonic-response"
        assert _tree(root) == _comparable(as_json), name
        resp = await client.get(f"/rest/{name}", params={**query, "f": "jsonp", "callback": "cb"})
        text = await resp.text()
        assert text.startswith("cb(") and json.loads(text[3:-2])["subsonic-response"] == as_json


async def test_a_bad_format_or_callback_is_a_subsonic_error_in_xml(server):
    for extra in ({"f": "yaml"}, {"f": "jsonp"}, {"f": "jsonp", "callback": "alert(1)"}):
        resp = await server.get("/rest/ping", params=_base(u="ann", p=PASSWORD, **extra))
        assert resp.status == 200
        root = etree.fromstring(await resp.read())
        assert root.get("status") == "failed" and root.find(f"{NS}error").get("code") in ("0", "10")


async def test_lists_are_arrays_even_of_one(server):
    body = await _json(server, "getMusicFolders", _base(u="ann", p=PASSWORD))
    assert body["musicFolders"]["musicFolder"] == [{"id": 1, "name": "Music"}]
    users = await _json(server, "getUsers", _base(u="ann", p=PASSWORD))
    assert [u["username"] for u in users["users"]["user"]] == ["ann"] and users["users"]["user"][0]["folder"] == [1]


async def test_real_clients_sign_in_and_ask(server):
    port = server.server.port
    opensonic = libopensonic.Connection("http://127.0.0.1", "ann", PASSWORD, port=port)
    keyed = libopensonic.Connection("http://127.0.0.1", api_key=server.token, port=port)
    wrong_key = libopensonic.Connection("http://127.0.0.1", api_key="nobody.nothing", port=port)
    try:
        assert await asyncio.to_thread(opensonic.ping) is True
        assert await asyncio.to_thread(keyed.ping) is True
        assert (await asyncio.to_thread(keyed.get_license))["license"]["valid"] is True
        names = {e.name for e in await asyncio.to_thread(opensonic.get_open_subsonic_extensions)}
        assert {"apiKeyAuthentication", "formPost"} <= names
        with pytest.raises(Exception, match="44|API key"):
            await asyncio.to_thread(wrong_key.ping)
    finally:
        for connection in (opensonic, keyed, wrong_key):
            await asyncio.to_thread(connection.cleanup)
    sonic = libsonic.Connection("http://127.0.0.1", "ann", PASSWORD, port=port)
    assert await asyncio.to_thread(sonic.ping) is True
    legacy = libsonic.Connection("http://127.0.0.1", "ann", PASSWORD, port=port, legacyAuth=True)
    assert await asyncio.to_thread(legacy.ping) is True
    wrong = libsonic.Connection("http://127.0.0.1", "ann", "wrong", port=port)
    with pytest.raises(Exception, match="40|Wrong"):
        await asyncio.to_thread(wrong.ping)


def _tree(element) -> dict:
    """An XML element as the JSON answer would hold it: attributes, then children (a list per
    repeated name), text as "value"."""
    out: dict = dict(element.attrib)
    out.pop("xmlns", None)
    for child in element:
        name = child.tag.removeprefix(NS)
        value = _tree(child) if len(child) or child.attrib else child.text
        out.setdefault(name, []).append(value)
    if element.text and element.text.strip() and not len(element):
        out["value"] = element.text
    return out


def _comparable(node):
    """The JSON answer with every scalar as XML writes it and every element as a list."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if isinstance(value, dict):
                out[key] = [_comparable(value)]
            elif isinstance(value, list):
                out[key] = [_comparable(v) if isinstance(v, dict) else _scalar(v) for v in value]
            else:
                out[key] = _scalar(value)
        return out
    return node


def _scalar(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def test_the_password_key_is_the_cluster_secret_s_in_a_cluster():
    assert password_key("x" * 16, b"node one") == password_key("x" * 16, b"node two")
    assert password_key("", b"node one") != password_key("", b"node two")
