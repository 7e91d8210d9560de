"""The web sign-in (issue 13, section 2): a name and a password for a session token, good until
the user's token or password changes; wrong passwords are throttled like bad tokens."""

from __future__ import annotations

from media import listeners
from streamer.http.keys import AUTH, CATALOG


async def _user(app, name="ann", password="pass word"):
    await app[CATALOG].db.write(listeners.add_user, name, "listener")
    await app[CATALOG].db.write(listeners.set_password, name, password, app[AUTH].password_key)


async def test_a_password_signs_in_and_the_session_token_works(demo_server):
    app = demo_server.server.app
    await _user(app)
    resp = await demo_server.post("/api/v1/session", json={"name": "ann", "password": "pass word"})
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert body["user"]["name"] == "ann" and body["expires_at"]
    auth = {"Authorization": f"Bearer {body['token']}"}
    me = await demo_server.get("/api/v1/me", headers=auth)
    assert me.status == 200 and (await me.json())["name"] == "ann"
    playlist = await demo_server.post("/api/v1/playlists", json={"name": "mine"}, headers=auth)
    assert playlist.status == 201


async def test_a_new_password_or_token_ends_sessions(demo_server):
    app = demo_server.server.app
    await _user(app)

    async def signed_in(password: str) -> dict[str, str]:
        resp = await demo_server.post("/api/v1/session", json={"name": "ann", "password": password})
        assert resp.status == 200
        auth = {"Authorization": f"Bearer {(await resp.json())['token']}"}
        assert (await demo_server.get("/api/v1/me", headers=auth)).status == 200
        return auth

    auth = await signed_in("pass word")
    await app[CATALOG].db.write(listeners.set_password, "ann", "another", app[AUTH].password_key)
    assert (await demo_server.get("/api/v1/me", headers=auth)).status == 401
    auth = await signed_in("another")
    await app[CATALOG].db.write(listeners.new_token, "ann")
    assert (await demo_server.get("/api/v1/me", headers=auth)).status == 401


async def test_wrong_passwords_and_bad_bodies(demo_server):
    app = demo_server.server.app
    await _user(app)
    for body in ({"name": "ann"}, {"name": "ann", "password": 5}, {"password": "x"}, {"name": "", "password": "x"}):
        assert (await demo_server.post("/api/v1/session", json=body)).status == 422
    assert (await demo_server.post("/api/v1/session", data=b"{", headers={"Content-Type": "application/json"})).status == 400
    statuses = [(await demo_server.post("/api/v1/session", json={"name": "ann", "password": "wrong"})).status
                for _ in range(11)]
    assert statuses[:10] == [401] * 10 and statuses[10] == 429
    forged = {"Authorization": "Bearer session.nobody.99999999999.AAAA"}
    assert (await demo_server.get("/api/v1/me", headers=forged)).status in (401, 429)


async def test_passwords_are_set_by_an_admin_or_their_owner(demo_server):
    from tests.conftest import make_user

    app = demo_server.server.app
    admin, ann = await make_user(app, "root", "admin"), await make_user(app, "ann")
    await make_user(app, "bob")

    async def put(name, headers, password="a new one"):
        return (await demo_server.put(f"/api/v1/users/{name}/password", json={"password": password},
                                      headers=headers)).status

    assert await put("ann", ann) == 204  # her own
    assert await put("bob", ann) == 403  # not another's
    assert await put("bob", admin) == 204
    assert await put("nobody", admin) == 404
    assert await put("ann", ann, password="") == 422
    assert await put("ann", ann, password="x" * 300) == 422
    assert await put("ann", {}) == 401
    signed_in = await demo_server.post("/api/v1/session", json={"name": "bob", "password": "a new one"})
    assert signed_in.status == 200


async def test_the_session_cookie_reads_but_never_writes(aiohttp_client, demo_library, tmp_path):
    """Off loopback (anonymous reads off) the web player's covers and audio read with the
    HttpOnly cookie the sign-in sets; a write needs the header; signing out clears it."""
    from streamer.app import create_app
    from tests.conftest import settings_for, wait_for_scan
    app = create_app(settings_for(demo_library, tmp_path / "data", anonymous_reads="off"))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    await _user(app)
    assert (await client.get("/api/v1/tracks")).status == 401
    resp = await client.post("/api/v1/session", json={"name": "ann", "password": "pass word"})
    cookie = resp.cookies["streamer_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie.value == (await resp.json())["token"]
    tracks = await client.get("/api/v1/tracks")
    assert tracks.status == 200
    track = (await tracks.json())["items"][0]
    assert (await client.get(f"/stream/{track['id']}", headers={"Range": "bytes=0-9"})).status == 206
    assert (await client.get("/api/v1/me")).status == 401  # a listener's own data needs the header
    assert (await client.post("/api/v1/playlists", json={"name": "x"})).status == 401
    out = await client.delete("/api/v1/session")
    assert out.status == 204
    assert (await client.get("/api/v1/tracks")).status == 401


async def test_a_token_trades_for_a_session_and_a_forged_cookie_is_refused(aiohttp_client, demo_library, tmp_path):
    from streamer.app import create_app
    from tests.conftest import make_user, settings_for, wait_for_scan
    app = create_app(settings_for(demo_library, tmp_path / "data", anonymous_reads="off"))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    headers = await make_user(app, "bob")
    resp = await client.post("/api/v1/session", headers=headers)
    assert resp.status == 200 and (await resp.json())["user"]["name"] == "bob"
    assert (await client.post("/api/v1/session", headers={"Authorization": "Bearer nope"})).status == 401
    client.session.cookie_jar.clear()
    forged = {"Cookie": "streamer_session=session.nobody.99999999999.AAAA"}
    assert (await client.get("/api/v1/tracks", headers=forged)).status == 401
    plain_token = {"Cookie": "streamer_session=" + headers["Authorization"].split()[1]}
    assert (await client.get("/api/v1/tracks", headers=plain_token)).status == 401


async def test_who_am_i_never_refuses(aiohttp_client, demo_library, tmp_path):
    """GET /api/v1/session: the page's first question, answered without a 401 (a browser logs
    every 401 as an error): who the bearer is, and whether this client may read without one."""
    from streamer.app import create_app
    from tests.conftest import make_user, settings_for, wait_for_scan
    app = create_app(settings_for(demo_library, tmp_path / "data", anonymous_reads="off"))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    headers = await make_user(app, "bob")
    assert await (await client.get("/api/v1/session")).json() == {"user": None, "anonymous_reads": False,
                                                                  "cookie": False}
    mine = await (await client.get("/api/v1/session", headers=headers)).json()
    assert mine["user"]["name"] == "bob" and mine["anonymous_reads"] is False and mine["cookie"] is False
    statuses = [(await client.get("/api/v1/session", headers={"Authorization": "Bearer wrong"})).status
                for _ in range(11)]
    assert statuses[:10] == [200] * 10 and statuses[10] == 429  # failures count like any bad token


async def test_who_am_i_on_loopback_reads_openly(demo_server):
    body = await (await demo_server.get("/api/v1/session")).json()
    assert body == {"user": None, "anonymous_reads": True, "cookie": False}


async def test_who_am_i_says_whether_the_cookie_came_for_that_user(aiohttp_client, demo_library, tmp_path):
    """A page whose browser dropped the cookie (or never kept it) learns it, and trades its token
    for a new session, which sets it again: its covers and audio read with it."""
    from streamer.app import create_app
    from tests.conftest import make_user, settings_for, wait_for_scan
    app = create_app(settings_for(demo_library, tmp_path / "data", anonymous_reads="off"))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    await _user(app)
    bob = await make_user(app, "bob")
    token = (await (await client.post("/api/v1/session", json={"name": "ann", "password": "pass word"})).json())["token"]
    ann = {"Authorization": f"Bearer {token}"}
    assert (await (await client.get("/api/v1/session", headers=ann)).json())["cookie"] is True
    assert (await (await client.get("/api/v1/session", headers=bob)).json())["cookie"] is False  # ann's cookie
    client.session.cookie_jar.clear()
    assert (await (await client.get("/api/v1/session", headers=ann)).json())["cookie"] is False
    renewed = await client.post("/api/v1/session", headers=ann)
    assert renewed.status == 200 and "streamer_session" in renewed.cookies
    assert (await (await client.get("/api/v1/session", headers=ann)).json())["cookie"] is True
    stale = {"Cookie": "streamer_session=session.nobody.99999999999.AAAA", **ann}
    client.session.cookie_jar.clear()
    assert (await (await client.get("/api/v1/session", headers=stale)).json())["cookie"] is False
    assert app[AUTH].failed == 0  # the browser sent those, nobody tried them


async def test_a_password_signs_in_from_json_only(demo_server):
    """Another site's form can post text/plain or a form encoding without asking: with a body
    made to parse as JSON it would sign the visitor's browser in as the site's own account."""
    await _user(demo_server.server.app)
    body = b'{"name": "ann", "password": "pass word", "x": "="}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        resp = await demo_server.post("/api/v1/session", data=body, headers={"Content-Type": content_type})
        assert resp.status == 415 and "streamer_session" not in resp.cookies, content_type
    signed_in = await demo_server.post("/api/v1/session", data=body, headers={"Content-Type": "application/json"})
    assert signed_in.status == 200


async def test_the_cookie_is_secure_through_the_https_public_url_only(aiohttp_client, demo_library, tmp_path):
    """A Secure cookie is never kept by a browser that reached the node over http (the LAN
    address of a node whose public_url is https): there it is sent without the flag."""
    from streamer.app import create_app
    from tests.conftest import settings_for
    app = create_app(settings_for(demo_library, tmp_path / "data", public_url="https://music.example.com"))
    client = await aiohttp_client(app)
    await _user(app)
    sign_in = {"name": "ann", "password": "pass word"}
    lan = await client.post("/api/v1/session", json=sign_in)
    assert lan.status == 200 and not lan.cookies["streamer_session"]["secure"]
    public = await client.post("/api/v1/session", json=sign_in, headers={"Host": "music.example.com"})
    assert public.status == 200 and public.cookies["streamer_session"]["secure"]


async def test_the_cookie_reads_the_catalog_but_names_no_one(aiohttp_client, demo_library, tmp_path):
    """A listener's private playlist, and URLs signed for them, need the token: the cookie only
    says that this browser may read (covers, streams, HLS, album playlists with plain URLs)."""
    from tests.conftest import settings_for, wait_for_scan
    from streamer.app import create_app
    app = create_app(settings_for(demo_library, tmp_path / "data", anonymous_reads="off"))
    client = await aiohttp_client(app)
    await wait_for_scan(app)
    await _user(app)
    signed = await client.post("/api/v1/session", json={"name": "ann", "password": "pass word"})
    auth = {"Authorization": f"Bearer {(await signed.json())['token']}"}
    tracks = (await (await client.get("/api/v1/tracks", headers=auth)).json())["items"]
    made = await client.post("/api/v1/playlists", json={"name": "mine", "track_ids": [tracks[0]["id"]]},
                             headers=auth)
    playlist = (await made.json())["id"]
    assert (await client.get(f"/api/v1/playlists/{playlist}/playlist.m3u8", headers=auth)).status == 200
    assert (await client.get(f"/api/v1/playlists/{playlist}/playlist.m3u8")).status == 401  # the cookie alone
    album = await client.get(f"/api/v1/albums/{tracks[0]['album_id']}/playlist.m3u8")
    assert album.status == 200 and "sig=" not in await album.text()
