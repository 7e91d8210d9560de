"""Media a node lacks, pulled from a node that holds it: once, streamed to listeners while it arrives.

A track whose file this node's own library lacks (none at its path with the catalog's size and
content fingerprint) is downloaded once (`GET /cluster/v1/media/{id}`, single flight per file)
from the first node that holds it: the master first, then the other nodes of the cluster
(streamer.cluster.members), so a region promoted after its master died, or re-pointed at the promoted
one, still finds every file some surviving node holds. A source that fails mid-file is followed
by the next from where it stopped (a Range request). The file must match the catalog's size and
fingerprint; it is kept in the node's bounded media cache and served from there like any
original. While it is on its way, a listener asking for the whole file or one range of it is sent
the bytes as they arrive (streamer.delivery.stream), so a first play starts at once instead of after the whole download;
requests that need the finished file (several ranges, conditional requests, HLS and transcodes,
which hand ffmpeg a path) wait for it.

With `mirror_media` (the default) a region also copies every file it lacks in the background, one
at a time, while its cache has room: then losing the master loses no music.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import time
from collections.abc import Callable

import aiohttp
from aiohttp import web

from media import NotFound, OutsideLibrary, image_type, library_file
from media.covers import MAX_COVER_BYTES
from media.fingerprint import content_fingerprint
from media.growing import GrowingFile
from streamer.cluster.members import Members
from streamer.delivery.originals import holds
from streamer.http.auth import SECRET_HEADER
from streamer.http.errors import ApiError
from streamer.http.keys import CACHE, CATALOG, SETTINGS

log = logging.getLogger(__name__)

PULL_CHUNK = 256 * 1024
# No limit on a whole download's time (a big file over a slow link), only on silence.
PULL_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30)
COVER_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=5)
MIRROR_SHARE = 0.8  # the mirror fills at most this share of the cache: segments need room too
MIRROR_RETRY = 30.0  # seconds before the mirror tries again files no node could give it
MIRROR_RECHECK = 600.0  # seconds between looks for copies the cache evicted


class Pulls:
    def __init__(self, app: web.Application, members: Members, session: aiohttp.ClientSession,
                 master_url: Callable[[], str | None]) -> None:
        self.app = app
        self.members = members
        self.session = session
        self.master_url = master_url  # a region's master, asked first; None on a master
        self._downloads: dict[str, GrowingFile] = {}
        self._tasks: set[asyncio.Task] = set()
        self.pulled_bytes = 0
        self._slots = asyncio.Semaphore(app[SETTINGS].pull_concurrency)  # downloads at once; more wait
        self._partial = app[SETTINGS].cache_dir / "pulls"  # files on their way in (kept by the cache after)
        shutil.rmtree(self._partial, ignore_errors=True)  # left by a crash: nobody waits for them now
        self.missing: int | None = None  # tracks with no copy on this node, as of the mirror's last pass

    async def elsewhere(self, track_id: str, track: dict, arriving: bool = False,
                        mirroring: bool = False) -> str | GrowingFile:
        """The path of the track's file in the cache, pulled first if need be; with `arriving`, a
        file still on its way is handed over as it is (streamer.delivery.stream sends it as it grows)."""
        key = pulled_key(track_id, track["size"])
        cache = self.app[CACHE]
        if key in self._downloads or not cache.has(key):
            download = self._download(track_id, track, key, mirroring)
            if arriving:
                return download
            await asyncio.shield(download.kept)
        handle = await cache.open_file(key)
        if handle is None:
            raise ApiError(503, "unavailable", "the pulled file is not in the cache; try again", {"Retry-After": "1"})
        handle.close()
        return handle.name

    def _download(self, track_id: str, track: dict, key: str, mirroring: bool = False) -> GrowingFile:
        download = self._downloads.get(key)
        if download is None:
            self._partial.mkdir(parents=True, exist_ok=True)
            download = self._downloads[key] = GrowingFile(track["size"], self._partial / f"{track_id}.{track['size']}")
            task = asyncio.create_task(self._fetch(track_id, track, key, download, mirroring), name=f"pull-{track_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return download

    async def _fetch(self, track_id: str, track: dict, key: str, download: GrowingFile, mirroring: bool) -> None:
        try:
            async with self._slots:
                source = await self._from_first_holder(track_id, download)
            # The size was checked as it came; the content too when the catalog knows it.
            expected = track.get("fingerprint")
            if expected and await asyncio.to_thread(content_fingerprint, str(download.path), download.size) != expected:
                raise ApiError(502, "bad_gateway", f"the file of track {track_id} from {source} is not the "
                               "catalog's (its content fingerprint differs)")
            await self.app[CACHE].keep_path(key, download.path)
            # The mirror's copies are summed up per pass; a listener's pull is worth a line.
            log.log(logging.DEBUG if mirroring else logging.INFO, "pulled track %s (%d bytes) from %s", track_id,
                    download.size, source)
            download.end()
        except (ApiError, NotFound) as exc:
            log.warning("pulling track %s failed: %s", track_id, getattr(exc, "message", exc))
            download.end(exc)
        except Exception as exc:  # keeping it failed (a full disk, say): say so, not "stopping"
            log.exception("pulling track %s failed", track_id)
            download.end(ApiError(502, "pull_failed", f"the file of track {track_id} could not be kept: {exc}"))
        except BaseException:
            download.end(ApiError(503, "unavailable", "the node is stopping", {"Retry-After": "5"}))
            raise
        finally:
            self._downloads.pop(key, None)

    async def _from_first_holder(self, track_id: str, download: GrowingFile) -> str:
        """Fill `download` from the first source that holds the file (each one after a failure
        goes on from where the last stopped); the source's URL."""
        sources = self.members.sources(self.master_url())
        unreachable, lacking = [], []
        for url in sources:
            try:
                await self._pull_from(url, track_id, download)
                return url
            except (aiohttp.ClientError, TimeoutError, OSError):
                unreachable.append(url)
            except _NotThere as exc:
                lacking.append(f"{url} {exc}")
        if not unreachable:
            raise NotFound(f"no node of the cluster holds the file of track {track_id!r} "
                           f"({'; '.join(lacking) or 'this node knows no other node'})")
        raise ApiError(503, "unavailable", f"this node lacks the file of track {track_id!r} and cannot reach a "
                       f"node that may hold it ({', '.join(unreachable)})", {"Retry-After": "5"})

    async def _pull_from(self, url: str, track_id: str, download: GrowingFile) -> None:
        have = download.length
        headers = {SECRET_HEADER: self.app[SETTINGS].cluster_secret}
        if have:
            headers["Range"] = f"bytes={have}-"
        async with self.session.get(f"{url}/cluster/v1/media/{track_id}", headers=headers, timeout=PULL_TIMEOUT) as resp:
            if resp.status != (206 if have else 200):
                raise _NotThere(f"answered {resp.status}")
            async for chunk in resp.content.iter_chunked(PULL_CHUNK):
                if download.length + len(chunk) > download.size:
                    raise _NotThere("sent more bytes than the catalog's size")
                await download.add(chunk)
                self.pulled_bytes += len(chunk)  # counted as it arrives: a listener may have it already
        if download.length != download.size:
            raise aiohttp.ClientPayloadError(f"{url} sent {download.length} of {download.size} bytes")

    async def cover(self, where: tuple[str, str]) -> bytes | None:
        """A cover picture this node's library lacks, from the first node that has it (kept in the
        media cache: a picture is asked for again and again); None when no node has it."""
        key = "pulled-cover/" + hashlib.blake2b("\n".join(where).encode("utf-8", "surrogateescape"),
                                                digest_size=12).hexdigest()

        async def fetch() -> bytes:
            for url in self.members.sources(self.master_url()):
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    data = await self._cover_from(url, where)
                    if data is not None:
                        return data
            raise NotFound("no node has this cover")
        try:
            return await self.app[CACHE].get_or_make(key, fetch)
        except NotFound:
            return None

    async def _cover_from(self, url: str, where: tuple[str, str]) -> bytes | None:
        params = {"kind": where[0], "path": where[1]}
        async with self.session.get(f"{url}/cluster/v1/cover", params=params, timeout=COVER_TIMEOUT,
                                    headers={SECRET_HEADER: self.app[SETTINGS].cluster_secret}) as resp:
            if resp.status != 200 or (resp.content_length or 0) > MAX_COVER_BYTES:
                return None
            data = await resp.content.read(MAX_COVER_BYTES + 1)
        return data if len(data) <= MAX_COVER_BYTES and image_type(data) else None

    async def mirror(self) -> None:
        """Copy every file this node lacks, one at a time, when its tracks change, and look again
        every MIRROR_RECHECK (a copy the cache evicted for segments is copied again), sooner when
        no node could give some file. A failed pass is logged and the next one goes on."""
        catalog, tracks_seen, again = self.app[CATALOG], None, None
        while True:
            generation = catalog.generation
            tracks_now = await catalog.db.read(_tracks_signature)
            if tracks_now != tracks_seen or again is not None:
                try:
                    again = await self._mirror_pass()
                    tracks_seen = tracks_now
                except Exception:
                    log.exception("mirror: a pass failed; trying again in %ds", MIRROR_RETRY)
                    again = MIRROR_RETRY
            # Woken by any catalog change (plays too): the signature says whether tracks did.
            await catalog.changed(generation, again or MIRROR_RECHECK)

    async def _mirror_pass(self) -> float | None:
        """One pass over the tracks without a copy: None when done, else seconds until the next try."""
        room = self.app[SETTINGS].cache_max_mb * 1024 * 1024 * MIRROR_SHARE
        started, copied, failed = time.monotonic(), 0, 0
        missing = await tracks_without_media(self.app)
        self.missing = len(missing)
        for track_id, track in missing:
            if await asyncio.to_thread(lambda: self.app[CACHE].volume) + track["size"] > room:
                log.warning("mirror: the media cache is %d%% full; %d tracks have no copy on this node (raise "
                            "cache_max_mb)", MIRROR_SHARE * 100, self.missing)
                return MIRROR_RETRY
            try:
                await self.elsewhere(track_id, track, mirroring=True)
                self.missing, copied = self.missing - 1, copied + 1
            except NotFound:  # no node holds it: the next may be there
                failed += 1
            except ApiError:  # no node that may hold it answers: wait, rather than ask for every file
                failed += 1
                break
        if copied:
            log.info("mirror: %d files copied in %.1fs; %d tracks without a copy on this node", copied,
                     time.monotonic() - started, self.missing)
        if failed:
            log.warning("mirror: %d tracks could not be copied from any node; trying again in %ds",
                        failed, MIRROR_RETRY)
            return MIRROR_RETRY
        return None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def keep(self, work, name: str) -> None:
        """Run `work` in the background until close."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _NotThere(Exception):
    """A source answered, without the file."""


def pulled_key(track_id: str, size: int) -> str:
    """The cache key of a track's file pulled from another node."""
    return f"pulled/{track_id}/{size}"


async def local_copy(app: web.Application, track_id: str, track: dict, scanned_here: bool) -> str | None:
    """The path of this node's own copy of a track's file (its library's, when it is the
    catalog's, or one pulled before), or None: what this node may serve to another.
    `scanned_here`: this node's own library made its catalog (a master's that never pulls)."""
    library = app[SETTINGS].library
    if await asyncio.to_thread(holds_in_library, library, track, scanned_here):
        return library_file(library, track["path"])
    handle = await app[CACHE].open_file(pulled_key(track_id, track["size"]))
    if handle is None:
        return None
    handle.close()
    return handle.name


def _tracks_signature(db) -> tuple:
    """Changes when a track is added, removed or replaced; not with plays or playlists."""
    return tuple(db.execute("SELECT COUNT(*), TOTAL(size), TOTAL(mtime_ns) FROM tracks").fetchone())


def holds_in_library(library, track: dict, scanned_here: bool = False) -> bool:
    """Whether the library holds the catalog's file at the track's path (never one outside it)."""
    try:
        return holds(library_file(library, track["path"]), track, scanned_here)
    except OutsideLibrary:
        log.warning("refused the path %r of a track: not inside the library", track["path"][:200])
        return False


async def tracks_without_media(app: web.Application) -> list[tuple[str, dict]]:
    """Tracks whose file is neither in this node's library (its size and fingerprint) nor pulled."""
    tracks = await app[CATALOG].db.read(lambda db: db.execute(
        "SELECT id, path, size, fingerprint, container FROM tracks ORDER BY id").fetchall())
    library, cache = app[SETTINGS].library, app[CACHE]

    def missing() -> list[tuple[str, dict]]:
        found = []
        for track_id, path, size, fingerprint, container in tracks:
            track = {"path": path, "size": size, "fingerprint": fingerprint, "container": container}
            if not cache.has(pulled_key(track_id, size)) and not holds_in_library(library, track):
                found.append((track_id, track))
        return found
    return await asyncio.to_thread(missing)
