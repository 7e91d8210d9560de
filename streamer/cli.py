"""Command line: `serve` (default), `scan`, `config`, `user`, `backup`, `cluster`, `promote`,
`follow`. A thin shell: parse, load settings, run.

Every setting of config.FIELDS is a flag of every command, so the CLI can never lag the settings.
Startup errors become one clear line on stderr and exit code 2 (bad configuration) or 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import resource
import sys
from pathlib import Path

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

import config
from config import FIELDS, ConfigError, Settings
from media import Catalog, MediaError, Scanner, ScanProgress
from media.database import skip_memory_statistics

COMMANDS = ("serve", "scan", "config", "user", "backup", "cluster", "promote", "follow")
log = logging.getLogger("streamer")


def build_parser() -> argparse.ArgumentParser:
    # `run.py` or the console script `streamer` (pyproject's [project.scripts]): the same CLI.
    prog = "streamer" if Path(sys.argv[0]).name == "streamer" else "run.py"
    parser = argparse.ArgumentParser(prog=prog, description="Self-hosted audio streaming node.")
    sub = parser.add_subparsers(dest="command")
    helps = {"serve": "serve the library over HTTP (the default command)",
             "scan": "scan the library into the catalog, with a progress bar, and exit",
             "config": "print the effective configuration and exit",
             "user": "manage users: user add NAME [--admin] [--password] | user password NAME | user list | "
                     "user token NAME | user remove NAME",
             "backup": "copy the catalog consistently (also while the server runs) to PATH and verify the copy",
             "cluster": "start a master and two regions on localhost (ports --port, +1, +2), Ctrl-C stops them",
             "promote": "make the running region of this config the master (it applies its outbox first)",
             "follow": "point the running region of this config at another master: follow URL"}
    for name in COMMANDS:
        cmd = sub.add_parser(name, help=helps[name], description=helps[name])
        _command_arguments(name, cmd)
        cmd.add_argument("--config", type=Path, metavar="FILE",
                         help="TOML settings file (also STREAMER_CONFIG); env STREAMER_* and flags override it")
        for field in FIELDS:
            if field.kind == "bool":
                cmd.add_argument(field.flag, dest=field.name, action=argparse.BooleanOptionalAction,
                                 default=None, help=field.help)
            else:
                cmd.add_argument(field.flag, dest=field.name, default=None,
                                 metavar=field.name.upper(), help=field.help)
    return parser


def _command_arguments(name: str, cmd: argparse.ArgumentParser) -> None:
    """The arguments of one command, besides the settings every command takes."""
    if name == "user":
        cmd.add_argument("action", choices=("add", "list", "token", "password", "remove"))
        cmd.add_argument("name", nargs="?", help="the user's name")
        cmd.add_argument("--admin", action="store_true", help="with add: the user may administer the node")
        cmd.add_argument("--password", action="store_true",
                         help="with add: give the user a password too (for Subsonic apps and the web "
                              "sign-in), asked for, or read from standard input")
    elif name == "backup":
        cmd.add_argument("path", type=Path, help="file to write the copy of the catalog to")
    elif name == "follow":
        cmd.add_argument("url", help="the new master's URL, such as http://127.0.0.1:8081")
    elif name == "cluster":
        cmd.add_argument("--folder", type=Path, default=Path("cluster"),
                         help="where the nodes' libraries and data go (default ./cluster)")
        cmd.add_argument("--reset", action="store_true",
                         help="start over: remove the nodes' data (catalogs, users, roles changed by "
                              "promote or follow, the regions' media); the demo library stays")


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv.insert(0, "serve")
    args = build_parser().parse_args(argv)
    cli = {f.name: getattr(args, f.name) for f in FIELDS}
    try:
        settings = config.load(args.config, os.environ if environ is None else environ, cli)
    except ConfigError as exc:
        for line in exc.lines:
            print(f"error: {line}", file=sys.stderr)
        return 2
    # Their output is the answer, not a log.
    quiet = args.command in ("user", "backup", "config", "cluster", "promote", "follow")
    handler = logging.StreamHandler()
    handler.setFormatter(EscapingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level="WARNING" if quiet else settings.log_level.upper(), handlers=[handler])
    if args.command == "config":
        print(config.describe(settings))
        return 0
    if args.command == "scan":
        try:
            return asyncio.run(scan(settings))
        except KeyboardInterrupt:  # the scan stopped and its readers were reaped on the way out
            print("scan stopped: what was saved stays, and the next scan reads the rest", file=sys.stderr)
            return 130
    if args.command == "user":
        return manage_user(settings, args.action, args.name, args.admin, args.password)
    if args.command == "backup":
        return backup(settings, args.path)
    if args.command == "cluster":
        from media import find_ffmpeg
        from streamer.cluster.local_cluster import run_cluster

        return run_cluster(args.folder.resolve(), settings.port, find_ffmpeg(settings.ffmpeg), args.reset)
    if args.command in ("promote", "follow"):
        return change_role(settings, args.command, getattr(args, "url", None))
    return serve(settings)


def change_role(settings: Settings, command: str, master_url: str | None) -> int:
    """Ask the running node of these settings to change its role (streamer.cluster.promotion)."""
    import json
    import urllib.error
    import urllib.request

    from streamer.cluster.members import node_url

    url = f"{node_url(settings.host, settings.port)}/cluster/v1/{command}"
    body = json.dumps({"master_url": master_url} if command == "follow" else {}).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "X-Cluster-Secret": settings.cluster_secret})
    try:
        with urllib.request.urlopen(request, timeout=120) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        print(f"error: {url} answered {exc.code}: {exc.read().decode('utf-8', 'replace')}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot reach the node at {url}: {exc}", file=sys.stderr)
        return 1
    if command == "promote":
        print(promoted_text(settings, url, answer, node_url(settings.host, settings.port)))
    else:
        print(f"{url}: now following {answer['master_url']} from sequence {answer['sequence']}. "
              f"Set master_url in this node's config too.")
    return 0


def promoted_text(settings: Settings, url: str, answer: dict, itself: str) -> str:
    """What the operator must know and do after a promotion; docs/cluster.md's promotion section says
    the same (streamer.cluster.saved_role, streamer.cluster.promotion)."""
    node_json = settings.data_dir.resolve() / "node.json"
    return (f"{url}: now the master, from sequence {answer['sequence']} (lineage {answer['lineage']}); "
            f"{answer['outbox_applied']} queued writes applied in {answer['seconds']} s; "
            f"{answer['tracks_without_media']} tracks have no copy on this node yet.\n"
            f"It stays the master across restarts, whatever its config says (recorded in {node_json}), "
            f"and does not scan its library meanwhile: a scan would remove the tracks whose files the "
            f"library lacks, on every node.\n"
            f"To make it a master for good: copy the old master's library into this node's library "
            f"({settings.library.resolve()} by this config), set role = \"master\" in this node's config and "
            f"remove {node_json}; it scans again from its next start.\n"
            f"Point the other regions at it: run.py follow {itself} --config THEIR_CONFIG "
            f"(and set master_url = \"{itself}\" in their configs).")


def manage_user(settings: Settings, action: str, name: str | None, admin: bool, password: bool = False) -> int:
    from media import listeners

    if action != "list" and not name:
        print(f"error: user {action} needs a NAME", file=sys.stderr)
        return 2
    secret = read_password() if password or action == "password" else None
    if secret == "":
        print("error: no password given", file=sys.stderr)
        return 2
    catalog = Catalog(settings.catalog_path, settings.db_synchronous)
    try:
        if action == "add":
            user, token = catalog.db.write_sync(listeners.add_user, name, "admin" if admin else "listener")
            if secret is not None:
                catalog.db.write_sync(listeners.set_password, name, secret, _password_key(settings))
            print(f"user {user['name']} ({user['role']}) added{' with a password' if secret else ''}. "
                  f"Its token, shown only now:\n{token}")
        elif action == "password":
            catalog.db.write_sync(listeners.set_password, name, secret, _password_key(settings))
            print(f"password of {name} set")
        elif action == "token":
            token = catalog.db.write_sync(listeners.new_token, name)
            print(f"new token for {name} (the old one no longer works):\n{token}")
        elif action == "remove":
            catalog.db.write_sync(listeners.remove_user, name)
            print(f"user {name} removed, with their playlists, favorites and plays")
        else:
            for user in catalog.db.read_sync(listeners.list_users):
                print(f"{user['name']}\t{user['role']}\tsince {user['created_at']}")
    except MediaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        catalog.close()
    return 0


def read_password() -> str:
    """From the terminal (asked twice), or the first line of standard input (a script's)."""
    import getpass

    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        print("error: the two passwords differ", file=sys.stderr)
        return ""
    return first


def _password_key(settings: Settings) -> bytes:
    from streamer.http.auth import load_secret, password_key

    return password_key(settings.cluster_secret, load_secret(settings.data_dir))


def backup(settings: Settings, path: Path) -> int:
    from media.backup import backup_catalog

    if not settings.catalog_path.exists():
        print(f"error: no catalog at {settings.catalog_path}", file=sys.stderr)
        return 1
    try:
        facts = backup_catalog(settings.catalog_path, path)
    except (OSError, MediaError) as exc:
        print(f"error: backup failed: {exc}", file=sys.stderr)
        return 1
    print(f"catalog copied to {path} and verified: {facts['tracks']} tracks, {facts['users']} users, "
          f"change sequence {facts['sequence']}, {facts['bytes'] / 1e6:.1f} MB")
    return 0


def serve(settings: Settings) -> int:
    from streamer.app import create_app
    from streamer.delivery import lane

    _raise_open_file_limit()
    skip_memory_statistics()  # before any connection is opened: see there
    logging.getLogger("aiohttp.server").addFilter(_withhold_request_details)
    try:
        loop = new_event_loop(settings.event_loop)
    except ImportError:
        print("error: event_loop: uvloop is not installed (pip install uvloop), or set event_loop = \"asyncio\"",
              file=sys.stderr)
        return 2
    try:
        app = create_app(settings)
    except MediaError as exc:
        loop.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    base = f"http://{settings.host}:{settings.port}"

    def announce(_: str) -> None:
        print(f"streamer: serving {settings.library.resolve()} on {base}\n"
              f"  open {base}/ in a browser to listen\n"
              f"  catalog API: {base}/api/v1/tracks   albums: {base}/api/v1/albums\n"
              f"  a track in any player: {base}/stream/<track id>\n"
              f"  an album in VLC/mpv:   {base}/api/v1/albums/<album id>/playlist.m3u8\n"
              f"  (Ctrl-C to stop)", flush=True)

    try:
        # An access log of every request needs every request through aiohttp: no fast lane then.
        debug = settings.log_level == "debug"
        lane.run(app, host=settings.host, port=settings.port, loop=loop, lane=not debug, announce=announce,
                 backlog=2048, access_log=log if debug else None, access_log_class=AccessLog,
                 handler_cancellation=False)
    except OSError as exc:
        print(f"error: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    return 0


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """The server's event loop (the event_loop setting): Python's own asyncio loop by default,
    or uvloop, libuv's, which runs a fifth fewer instructions per range request but, at 1,000
    busy connections, left some waiting seconds where asyncio's kept every answer under about
    1.5 s (bench/README.md); both serve the same answers (tests/uvloop/)."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """Control characters as visible escapes (a newline as \\n, others \\xNN): a path or header
    sent by a client can then never start a line of its own in a log or on a terminal."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1] if m.group() in "\n\r\t"
                        else f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",
                        text)


class EscapingFormatter(logging.Formatter):
    """Every log line is one line: control characters in the message (with its arguments
    substituted: paths, addresses, tags) are escaped; a traceback keeps its own lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


def _withhold_request_details(record: logging.LogRecord) -> bool:
    """aiohttp logs a request it cannot parse with the offending header line, which may be an
    Authorization header: keep the fact, drop the text."""
    if record.exc_info and isinstance(record.exc_info[1], HttpProcessingError):
        record.msg, record.args = "a request could not be parsed: %s (details withheld)", (
            type(record.exc_info[1]).__name__,)
        record.exc_info = record.exc_text = None
    return True


class AccessLog(AbstractAccessLogger):
    """The access log (at log level debug): the path without its query, so that signatures of
    signed URLs never reach a log, and never a header (tokens travel in Authorization)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info('%s "%s %s" %d %d %.1fms', _client(request), request.method, request.path,
                         response.status, response.body_length, time * 1000)


def _client(request: web.BaseRequest) -> str:
    """Behind trusted proxies, the client they forwarded for (streamer.auth.Auth.client)."""
    from streamer.http.keys import AUTH

    app = getattr(request, "app", None)
    return app[AUTH].client(request) if app is not None and AUTH in app else request.remote or "?"


async def scan(settings: Settings) -> int:
    if not settings.library.is_dir():
        print(f"error: library: folder {settings.library} does not exist", file=sys.stderr)
        return 2
    catalog = Catalog(settings.catalog_path, settings.db_synchronous)
    try:
        bar = ProgressBar(sys.stderr)
        scanner = Scanner(settings.library, catalog, workers=settings.scan_workers, on_progress=bar.update)
        progress = await scanner.scan()
        bar.finish()
    finally:
        catalog.close()
    print(f"scanned {settings.library} in {progress.seconds:.1f}s: {progress.files} audio files, "
          f"{progress.added} added, {progress.updated} updated, {progress.removed} removed, "
          f"{progress.unchanged} unchanged, {progress.skipped} skipped")
    for problem in progress.problems:  # a file name may hold a newline
        print(escape_controls(f"  skipped {problem['path']}: {problem['reason']}"))
    return 0 if progress.state == "done" else 1


class ProgressBar:
    """A one-line progress bar on a terminal; plain periodic lines when not a terminal."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._last_plain = -1

    def update(self, progress: ScanProgress) -> None:
        if progress.state != "reading" or not progress.to_read:
            return
        done, total = progress.read, progress.to_read
        if self.tty:
            width = 30
            filled = width * done // total
            self.stream.write(f"\rreading tags [{'#' * filled}{'.' * (width - filled)}] "
                              f"{done}/{total} files, {progress.skipped} skipped")
            self.stream.flush()
        elif done * 10 // total != self._last_plain:
            self._last_plain = done * 10 // total
            self.stream.write(f"reading tags: {done}/{total} files\n")

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")


def _raise_open_file_limit() -> None:
    """Each listener is a socket and each playing track an open file: lift the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
