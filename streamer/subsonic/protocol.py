"""The Subsonic protocol (1.16.1, with OpenSubsonic's extensions): parameters in, answers out.

Every endpoint answers `/rest/NAME` and `/rest/NAME.view`, as GET or as POST with a form body
(the `formPost` extension); a parameter may repeat where the spec repeats it. An answer is one
tree (dicts, lists, scalars) rendered as XML in the `http://subsonic.org/restapi` namespace (the
default), as JSON `{"subsonic-response": {...}}`, or as JSONP. In the tree a dict is an element,
its scalar values are attributes, a list is one element per item (an array in JSON, even of one
or none), and the key `value` is an element's text. Errors are answered with HTTP 200, as the
spec requires, with the spec's codes.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from streamer.http.json_answers import dumps, encoded_response
from streamer.http.status import VERSION

API_VERSION = "1.16.1"
SERVER_TYPE = "streamer"
NAMESPACE = "http://subsonic.org/restapi"
HELP_URL = "https://opensubsonic.netlify.app/docs/api-reference/"
PARAMS = web.RequestKey("subsonic_params", MultiDictProxy)
FORMAT = web.RequestKey("subsonic_format", tuple)  # ("xml" | "json" | "jsonp", callback)
_NEEDS_ESCAPE = re.compile("[&<>\"\x00-\x1f\ud800-\udfff\ufffe\uffff]")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_CALLBACK = re.compile(r"[A-Za-z_$][\w$.]{0,99}")

# The spec's error codes.
GENERIC, MISSING, CLIENT_TOO_OLD, SERVER_TOO_OLD, WRONG_CREDENTIALS = 0, 10, 20, 30, 40
TOKEN_AUTH_OFF, PROVIDER_NOT_SUPPORTED, CONFLICTING_AUTH, INVALID_API_KEY = 41, 42, 43, 44
NOT_AUTHORIZED, NOT_FOUND = 50, 70


class SubsonicError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def missing(name: str) -> SubsonicError:
    return SubsonicError(MISSING, f"Required parameter is missing: {name}")


def not_found(what: str) -> SubsonicError:
    return SubsonicError(NOT_FOUND, f"{what} not found")


def one(request: web.Request, name: str, required: bool = True) -> str | None:
    """A parameter's value (its first, if repeated); error 10 when a required one is missing."""
    value = request[PARAMS].get(name)
    if value is None and required:
        raise missing(name)
    return value


def many(request: web.Request, name: str) -> list[str]:
    """Every value of a repeated parameter (`id=1&id=2`)."""
    return request[PARAMS].getall(name, [])


def integer(request: web.Request, name: str, default: int | None, minimum: int, maximum: int) -> int:
    raw = request[PARAMS].get(name)
    if raw is None or raw == "":
        if default is None:
            raise missing(name)
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SubsonicError(GENERIC, f"{name}: expected a whole number, got {raw[:20]!r}") from None
    if not minimum <= value <= maximum:
        raise SubsonicError(GENERIC, f"{name}: must be from {minimum} to {maximum}, got {value}")
    return value


def flag(request: web.Request, name: str, default: bool) -> bool:
    raw = request[PARAMS].get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() not in ("true", "false", "1", "0"):
        raise SubsonicError(GENERIC, f"{name}: expected true or false, got {raw[:20]!r}")
    return raw.lower() in ("true", "1")


def plain_password(given: str) -> str | None:
    """A password as Subsonic sends one: as it is, or `enc:` and its UTF-8 bytes in hex (None when
    those are not hex of UTF-8)."""
    if not given.startswith("enc:"):
        return given
    try:
        return bytes.fromhex(given[4:]).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


async def read_params(request: web.Request) -> MultiDictProxy:
    """The query's parameters, and a form body's (formPost) after them."""
    merged = MultiDict(request.query)
    if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
        merged.extend(await request.post())
    return MultiDictProxy(merged)


def choose_format(params: MultiDictProxy) -> tuple[str, str]:
    """The answer's format and JSONP callback; a bad one is an error answered in XML."""
    fmt = params.get("f", "xml")
    if fmt not in ("xml", "json", "jsonp"):
        raise SubsonicError(GENERIC, f"unknown format f={fmt[:20]!r}: xml, json or jsonp")
    callback = params.get("callback", "")
    if fmt == "jsonp" and not _CALLBACK.fullmatch(callback):
        raise SubsonicError(MISSING, "Required parameter is missing: callback (a JavaScript name)")
    return fmt, callback


def answer(request: web.Request, body: dict[str, Any] | None = None) -> web.Response:
    """An "ok" answer holding `body` (e.g. {"artists": {...}})."""
    return render(request.get(FORMAT, ("xml", "")), {"status": "ok", **_envelope(), **(body or {})})


def error_answer(fmt: tuple[str, str], error: SubsonicError, status: int = 200, headers=None) -> web.Response:
    tree = {"status": "failed", **_envelope(),
            "error": {"code": error.code, "message": error.message, "helpUrl": HELP_URL}}
    return render(fmt, tree, status, headers)


def _envelope() -> dict[str, Any]:
    return {"version": API_VERSION, "type": SERVER_TYPE, "serverVersion": VERSION, "openSubsonic": True}


def render(fmt: tuple[str, str], tree: dict[str, Any], status: int = 200, headers=None) -> web.Response:
    kind, callback = fmt
    if kind == "xml":
        out = ['<?xml version="1.0" encoding="UTF-8"?>']
        _element(out, "subsonic-response", tree, f' xmlns="{NAMESPACE}"')
        return web.Response(text="".join(out), content_type="text/xml", charset="utf-8", status=status,
                            headers=headers)
    encoded = dumps({"subsonic-response": tree})
    if kind == "jsonp":  # the callback: a JavaScript name (choose_format), in UTF-8 as the rest
        return web.Response(body=b"%s(%s);" % (callback.encode(), encoded), content_type="application/javascript",
                            charset="utf-8", status=status, headers=headers)
    return encoded_response(encoded, status, headers)


def _element(out: list[str], name: str, tree: dict[str, Any], attributes: str = "") -> None:
    """The element written as text into `out` (a string join: ElementTree was five times slower
    on an album's answer, and XML is what most apps ask for)."""
    children, text = [], None
    for key, value in tree.items():
        if value is None:
            continue
        if key == "value":
            text = _escaped(value)
        elif isinstance(value, dict | list):
            children.append((key, value))
        else:
            attributes += f' {key}="{_escaped(value)}"'
    if not children and text is None:
        out.append(f"<{name}{attributes}/>")
        return
    out.append(f"<{name}{attributes}>{text or ''}")
    for key, value in children:
        for item in value if isinstance(value, list) else (value,):
            if isinstance(item, dict):
                _element(out, key, item)
            else:  # a list of scalars: elements with text (OpenSubsonic's versions, say)
                out.append(f"<{key}>{_escaped(item)}</{key}>")
    out.append(f"</{name}>")


def _escaped(value: Any) -> str:
    """A value as XML text or attribute: escaped, and characters XML 1.0 cannot carry (controls,
    lone surrogates) as U+FFFD, so a tag or a parameter echoed back never makes an answer no
    parser reads."""
    if value is True or value is False:
        return "true" if value else "false"
    text = str(value)
    if _NEEDS_ESCAPE.search(text) is None:
        return text
    return _NOT_XML.sub("\ufffd", text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace(
        '"', "&quot;").replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")
