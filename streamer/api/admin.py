"""Admin writes to the library: upload a track, edit a track's catalog metadata.

An upload streams to a hidden file in the library (the scanner skips hidden files), is checked
with mutagen before anything is kept, and is then linked into place as Artist/Album/NN Title.ext
(a link, so it never replaces a file already there) and put in the catalog at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import hashlib
import os
import re
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from media import OutsideLibrary, UnreadableFile, ids, library_file, listeners
from media.fingerprint import content_fingerprint
from media.formats import container_for
from media.tags import read_track
from streamer.http.auth import USER
from streamer.http.edge import Routes, Write
from streamer.http.errors import ApiError
from streamer.http.keys import AUTH, CATALOG, SETTINGS, WRITE_LIMITS
from streamer.http.json_answers import json_response
from streamer.api.bodies import idempotency_key, is_plain_text, json_body

CHUNK = 256 * 1024
_UNSAFE = re.compile(r'[\x00-\x1f/\\:*?"<>|]+')
EDITABLE = {"title": str, "artist": str, "album": str, "album_artist": str, "genre": str,
            "track_number": int, "disc_number": int, "year": int}
# The catalog keeps tags as read; an edit changes those, and the shown values follow from them.
_TAG_COLUMN = {"artist": "tag_artist", "album": "tag_album", "album_artist": "album_artist_tag"}


def _part(text: str, fallback: str, limit: int = 120) -> str:
    """A safe file or folder name: no separators or control characters, no leading dots, and at
    most `limit` bytes of UTF-8 (file systems count bytes: 255 at most)."""
    # Dots and spaces go from both ends together: stripping them in turn made ". .." into "..".
    cleaned = _UNSAFE.sub(" ", text).strip(" .")
    cleaned = cleaned.encode("utf-8")[:limit].decode("utf-8", "ignore").strip(" .")
    return cleaned or fallback


def remove_partial_uploads(library: Path) -> int:
    """Uploads cut short by a crash leave their temporary file (.upload-*) in the library root."""
    removed = 0
    for leftover in library.glob(".upload-*"):
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed


def check_upload(content_type: str, body: bytes, scratch: Path) -> None:
    """Refuse, as upload_track would, an upload already whole in memory (a region queueing it
    while its master is down): the form, the file type, and whether the file is audio at all."""
    form = email.message_from_bytes(b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n"
                                    + body, policy=email.policy.HTTP)
    if not form.is_multipart():
        raise ApiError(400, "invalid_body", "expected multipart/form-data with a 'file' field")
    part = next((p for p in form.iter_parts() if p.get_param("name", header="content-disposition") == "file"), None)
    if part is None or not part.get_filename():
        raise ApiError(422, "invalid_field", "file: expected a file field named 'file'")
    extension = os.path.splitext(part.get_filename())[1].lower()
    if container_for("x" + extension) is None:
        raise ApiError(422, "invalid_field", f"file: {extension or 'no extension'} is not an audio file type")
    data = part.get_payload(decode=True) or b""
    scratch.mkdir(parents=True, exist_ok=True)
    temporary = scratch / f".check-{ids.new_id()}{extension}"
    try:
        temporary.write_bytes(data)
        read_track(temporary, len(data))
    except UnreadableFile as exc:
        raise ApiError(422, "invalid_field", f"file: not usable audio: {str(exc).replace(str(temporary), 'the file')}") from None
    finally:
        temporary.unlink(missing_ok=True)


async def upload_track(request: web.Request) -> web.Response:
    """Store an uploaded file in the library under its tags (Artist/Album/NN Title.ext) and add
    it to the catalog. The same upload sent again with its key gets the first answer."""
    settings = request.app[SETTINGS]
    field, extension = await _file_field(request, settings.upload_max_mb)
    library = settings.library
    temporary = library / f".upload-{ids.new_id()}{extension}"
    user, key = request[USER], idempotency_key(request)
    request.app[WRITE_LIMITS].check_rate(user["id"])
    try:
        size, sha256 = await _receive(field, temporary, settings.upload_max_mb)
        payload = {"sha256": sha256, "filename": field.filename}
        earlier = await _earlier_answer(request, user, key, payload)
        if earlier is not None:
            return earlier
        facts = await asyncio.to_thread(_audio_facts, temporary, size)
        relative = _place_in_library(facts, extension)
        destination = _store(temporary, library, relative)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    record = await _track_record(facts, relative, destination)
    status, track = await request.app[CATALOG].add_track(record, user, key, payload)
    return json_response(track, status=status)


async def _file_field(request: web.Request, upload_max_mb: int):
    """The multipart field named 'file', and its extension (an audio file type)."""
    if request.content_length is not None and request.content_length > upload_max_mb * 1024 * 1024 + 64 * 1024:
        raise ApiError(413, "payload_too_large", f"uploads are limited to {upload_max_mb} MB")
    try:
        reader = await request.multipart()
        field = await reader.next()
        while field is not None and getattr(field, "name", None) != "file":
            field = await reader.next()
    except (AssertionError, ValueError, KeyError, HttpProcessingError):
        raise ApiError(400, "invalid_body", "expected multipart/form-data with a 'file' field") from None
    if field is None or not getattr(field, "filename", None):
        raise ApiError(422, "invalid_field", "file: expected a file field named 'file'")
    extension = os.path.splitext(field.filename)[1].lower()
    if container_for("x" + extension) is None:
        raise ApiError(422, "invalid_field", f"file: {extension or 'no extension'} is not an audio file type")
    return field, extension


async def _receive(field, temporary: Path, upload_max_mb: int) -> tuple[int, str]:
    """The file, written to `temporary` as it arrives: its size and SHA-256."""
    limit, size, digest = upload_max_mb * 1024 * 1024, 0, hashlib.sha256()
    with open(temporary, "xb") as out:
        try:
            while chunk := await field.read_chunk(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, "payload_too_large", f"uploads are limited to {upload_max_mb} MB")
                await asyncio.to_thread(out.write, chunk)
        except (ValueError, HttpProcessingError):
            raise ApiError(400, "invalid_body", "the multipart body is malformed") from None
    return size, digest.hexdigest()


async def _earlier_answer(request: web.Request, user: dict, key: str | None, payload: dict) -> web.Response | None:
    """The answer to this upload sent before with the same key (nothing is stored again)."""
    if key is None:
        return None
    earlier = await request.app[CATALOG].db.read(listeners.remembered, user["id"], key,
                                                 listeners.fingerprint_of("track.upload", payload))
    return None if earlier is None else json_response(earlier[1], status=earlier[0])


def _audio_facts(temporary: Path, size: int) -> dict[str, Any]:
    try:
        return read_track(temporary, size)
    except UnreadableFile as exc:
        reason = str(exc).replace(str(temporary), "the file")  # no internal paths in answers
        raise ApiError(422, "invalid_field", f"file: not usable audio: {reason}") from None


def _place_in_library(facts: dict[str, Any], extension: str) -> str:
    """Artist/Album/NN Title.ext, from the file's tags, as a safe relative path."""
    artist = _part(facts["album_artist_tag"] or facts["tag_artist"], "Unknown Artist")
    album = _part(facts["tag_album"], "Unknown Album")
    number = f"{facts['track_number']:02d} " if facts["track_number"] else ""
    return f"{artist}/{album}/" + _part(f"{number}{facts['title']}", "Untitled", 180) + extension


def _store(temporary: Path, library: Path, relative: str) -> Path:
    """Link the received file into the library at `relative`: atomic, and never over what is there."""
    try:
        destination = Path(library_file(library, relative))  # a last check that it stays inside
    except OutsideLibrary:
        raise ApiError(422, "invalid_field", f"file: its tags make no path inside the library ({relative!r})") from None
    made = [d for d in (library / relative.split("/")[0], destination.parent) if not d.exists()]
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.link(temporary, destination)
    except FileExistsError:
        raise ApiError(409, "conflict", f"{relative} is already in the library") from None
    except OSError as exc:
        for folder in reversed(made):  # leave no empty folders behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise ApiError(422, "invalid_field", f"file: cannot be stored as {relative}: {exc.strerror}") from None
    return destination


async def _track_record(facts: dict[str, Any], relative: str, destination: Path) -> dict[str, Any]:
    stat = destination.stat()
    return {**facts, "id": ids.track_id(relative), "path": relative, "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns, "container": container_for(relative),
            "fingerprint": await asyncio.to_thread(content_fingerprint, str(destination), stat.st_size)}


async def edit_track(request: web.Request) -> web.Response:
    body = await json_body(request)
    if not body:
        raise ApiError(422, "invalid_field", f"body: expected an object with some of {', '.join(EDITABLE)}")
    changes: dict[str, Any] = {}
    for key, value in body.items():
        kind = EDITABLE.get(key)
        if kind is None:
            raise ApiError(422, "invalid_field", f"{key}: not an editable field ({', '.join(EDITABLE)})")
        if value is not None and (type(value) is not kind or (kind is str and len(value) > 500)
                                  or (kind is int and not 0 <= value <= 9999)):
            raise ApiError(422, "invalid_field", f"{key}: expected {'a string' if kind is str else 'a number'} or null")
        if key == "title" and not (value or "").strip():
            raise ApiError(422, "invalid_field", "title: must not be empty")
        if isinstance(value, str) and not is_plain_text(value):
            raise ApiError(422, "invalid_field", f"{key}: control and format characters are not allowed")
        changes[_TAG_COLUMN.get(key, key)] = value.strip() if isinstance(value, str) else value
    await request.app[WRITE_LIMITS].check(request, request[USER]["id"])
    status, track = await request.app[CATALOG].edit_track(request.match_info["id"], changes, request[USER],
                                                          idempotency_key(request))
    return json_response(track, status=status)


async def set_password(request: web.Request) -> web.Response:
    """`PUT /api/v1/users/{name}/password {"password"}`: an admin sets anyone's, a user their own."""
    name, me = request.match_info["name"], request[USER]
    if me["role"] != "admin" and me["name"] != name:
        raise ApiError(403, "forbidden", "only an admin sets another user's password")
    password = (await json_body(request)).get("password")
    await request.app[WRITE_LIMITS].check(request, me["id"])
    await request.app[CATALOG].db.write(listeners.set_password, name, password, request.app[AUTH].password_key)
    return web.Response(status=204)


def add_routes(app: web.Application, routes: Routes) -> None:
    routes.write("POST", "/api/v1/tracks", upload_track, "track_upload", access="admin",
                 write=Write(upload=check_upload))
    routes.write("PATCH", "/api/v1/tracks/{id}", edit_track, "track_edit", access="admin")
    # Never kept in a region's outbox: a password does not rest there while the master is away.
    routes.write("PUT", "/api/v1/users/{name}/password", set_password, "user_password", write=Write(kept=False))
