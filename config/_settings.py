"""The settings table and its loader.

Every setting is declared once in FIELDS (name, type, default, help). That single table drives the
defaults, the TOML keys, the STREAMER_* environment names, the CLI flags and the type checks, so a
setting can never be known to one source and unknown to another.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ENV_PREFIX = "STREAMER_"
ENV_CONFIG_FILE = "STREAMER_CONFIG"  # names the TOML file; not a setting itself
ROLES = ("standalone", "master", "region")
LOG_LEVELS = ("debug", "info", "warning", "error")
EVENT_LOOPS = ("asyncio", "uvloop")
# The cluster secrets written in config/*.toml: known to everyone, so refused unless every node
# of the cluster is on loopback (the localhost cluster those files start).
SAMPLE_SECRETS = ("localhost-cluster-secret-change-me", "change-me-to-a-long-random-string")


class ConfigError(Exception):
    """Bad configuration. Each line of `lines` names the key, the source and what is wrong."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    kind: str  # "str" | "int" | "ints" | "urls" | "nets" | "bool" | "path" | "choice"
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    secret: bool = False

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


FIELDS: tuple[Field, ...] = (
    Field("host", "str", "127.0.0.1", "address to listen on"),
    Field("port", "int", 8080, "TCP port to listen on", minimum=0, maximum=65535),
    Field("library", "path", Path("music"), "music folder to scan and serve "
          "(the default ./music is created, and filled with a demo library when empty)"),
    Field("data_dir", "path", Path("data"), "folder for the catalog database and caches"),
    Field("role", "choice", "standalone", "cluster role of this node", choices=ROLES),
    Field("cache_max_mb", "int", 2048, "size limit of the on-disk cache, in MiB", minimum=16),
    Field("scan_on_start", "bool", True, "scan the library in the background when the server starts"),
    Field("loudness_analysis", "bool", True, "measure each track's EBU R128 loudness in the background after a "
          "scan (it gives way to listeners), for players' volume levelling when a file has no ReplayGain tags"),
    Field("demo_library", "bool", True, "make a small demo library when the default library is empty"),
    Field("scan_workers", "int", 0, "processes that read tags during a scan (0: one per core)",
          minimum=0, maximum=64),
    Field("max_ranges", "int", 32, "most ranges served as multipart/byteranges; "
          "a request with more gets the whole file", minimum=1, maximum=1000),
    Field("hls_segment_seconds", "int", 6, "length of HLS segments, in seconds", minimum=2, maximum=30),
    Field("hls_bitrates", "ints", (64, 128, 256), "AAC bitrates of the HLS variants, in kbit/s",
          minimum=16, maximum=512),
    Field("ffmpeg_processes", "int", 0, "ffmpeg processes at once (0: 16 per core); more wait",
          minimum=0, maximum=64),
    Field("ffmpeg_queue_seconds", "int", 10, "how long work waits for an ffmpeg slot before the "
          "answer is 503 with Retry-After", minimum=1, maximum=600),
    Field("transcodes_per_client", "int", 4, "progressive transcodes (/stream/ID?format=) one client "
          "address may have streaming at once; more get 429", minimum=1, maximum=64),
    Field("writes_per_minute", "int", 300, "writes one user may make a minute (as a burst too); more get 429",
          minimum=1, maximum=1_000_000),
    Field("write_max_kb", "int", 1024, "largest body of a write other than an upload, in KiB (more gets 413)",
          minimum=1, maximum=1024),
    Field("upload_max_mb", "int", 200, "largest track an admin may upload, in MiB", minimum=1, maximum=4096),
    Field("anonymous_reads", "choice", "auto", "listening without a token: auto (only for a client on "
          "loopback, on a node bound to loopback with no public_url), on, off", choices=("auto", "on", "off")),
    Field("subsonic_token_auth", "bool", True, "Subsonic apps may sign in with t and s (a salted md5 of the "
          "password): each password is then kept sealed, readable with this node's (or the cluster's) secret; off: "
          "only p or apiKey (t and s get error 41)"),
    Field("trusted_proxies", "nets", (), "addresses or networks of reverse proxies (nginx) whose "
          "X-Forwarded-For / Forwarded is believed: the client they name is the one throttled and checked "
          "for loopback"),
    Field("monitoring_clients", "nets", (), "addresses or networks (a metrics scraper's) that may read "
          "/metrics and /healthz's details off loopback without the cluster secret or an admin token"),
    Field("cors_origins", "str", "*", "web origins allowed to call the listener API: * or a comma-separated "
          "list (media and the catalog are open to every origin)"),
    Field("cluster_secret", "str", "", "shared secret every node-to-node request carries (at least 16 "
          "characters; needed by master and region)", secret=True),
    Field("changes_keep_hours", "int", 168, "change-log rows older than this are compacted away (a region "
          "further behind takes a new snapshot)", minimum=1, maximum=100_000),
    Field("db_synchronous", "choice", "full", "full: a write answered is on disk, even after a power cut; "
          "normal: it survives a crash of the program, not of the machine (SQLite's synchronous)",
          choices=("full", "normal")),
    Field("changes_keep_rows", "int", 1_000_000, "most change-log rows kept", minimum=100, maximum=10**9),
    Field("changes_keep_mb", "int", 256, "most change-log data kept, in MiB (older rows are compacted away)",
          minimum=1, maximum=1_000_000),
    Field("idempotency_keep_hours", "int", 24, "how long a write's answer is kept for a retry with its "
          "Idempotency-Key", minimum=1, maximum=100_000),
    Field("master_url", "str", "", "a region's master, e.g. http://127.0.0.1:8080"),
    Field("cluster_nodes", "urls", (), "the URLs of the cluster's members (http(s)://HOST:PORT): the only "
          "nodes this one follows, pulls from and sends the cluster secret to, besides master_url"),
    Field("cluster_ca_file", "path", None, "a CA certificate file (PEM) to verify the other nodes' https "
          "certificates with (default: the system's)"),
    Field("cluster_url", "str", "", "the URL other nodes of the cluster reach this node at "
          "(default: http://HOST:PORT, with 127.0.0.1 for a wildcard host)"),
    Field("sync_replicas", "int", 0, "a master answers a write only once this many followers hold it "
          "(0: at once, replication is asynchronous)", minimum=0, maximum=16),
    Field("sync_wait_ms", "int", 3000, "how long a write waits for sync_replicas followers", minimum=1,
          maximum=600_000),
    Field("sync_fallback", "choice", "refuse", "when sync_replicas followers do not hold a write in time: "
          "refuse (503; the write is kept at the master, a retry with its Idempotency-Key answers it) "
          "or proceed (answer it unreplicated)", choices=("refuse", "proceed")),
    Field("outbox_max_mb", "int", 512, "most a region's outbox keeps while its master is down, in MiB (past it, "
          "writes get 507)", minimum=1, maximum=1_000_000),
    Field("pull_concurrency", "int", 4, "files pulled from other nodes at once (more wait their turn)",
          minimum=1, maximum=64),
    Field("mirror_media", "bool", True, "a region copies, in the background, every track its library lacks "
          "into its media cache (bounded by cache_max_mb), so playback survives its master's loss"),
    Field("public_url", "str", "", "base URL used in playlists (default: taken from the request)"),
    Field("ffmpeg", "str", "", "path of an ffmpeg binary (default: the one from imageio-ffmpeg)"),
    Field("log_level", "choice", "info", "logging level", choices=LOG_LEVELS),
    Field("event_loop", "choice", "asyncio", "the server's event loop: asyncio (Python's own) or uvloop (libuv's: "
          "fewer instructions per request, but a tail of seconds at 1,000 connections; pip install uvloop)",
          choices=EVENT_LOOPS),
)
_BY_NAME = {f.name: f for f in FIELDS}


@dataclasses.dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    library: Path = Path("music")
    data_dir: Path = Path("data")
    role: str = "standalone"
    cache_max_mb: int = 2048
    scan_on_start: bool = True
    loudness_analysis: bool = True
    demo_library: bool = True
    scan_workers: int = 0
    max_ranges: int = 32
    hls_segment_seconds: int = 6
    hls_bitrates: tuple[int, ...] = (64, 128, 256)
    ffmpeg_processes: int = 0
    ffmpeg_queue_seconds: int = 10
    transcodes_per_client: int = 4
    writes_per_minute: int = 300
    write_max_kb: int = 1024
    upload_max_mb: int = 200
    anonymous_reads: str = "auto"
    subsonic_token_auth: bool = True
    trusted_proxies: tuple[str, ...] = ()
    monitoring_clients: tuple[str, ...] = ()
    cors_origins: str = "*"
    cluster_secret: str = ""
    changes_keep_hours: int = 168
    db_synchronous: str = "full"
    changes_keep_rows: int = 1_000_000
    changes_keep_mb: int = 256
    idempotency_keep_hours: int = 24
    master_url: str = ""
    cluster_nodes: tuple[str, ...] = ()
    cluster_ca_file: Path | None = None
    cluster_url: str = ""
    sync_replicas: int = 0
    sync_wait_ms: int = 3000
    sync_fallback: str = "refuse"
    outbox_max_mb: int = 512
    pull_concurrency: int = 4
    mirror_media: bool = True
    public_url: str = ""
    ffmpeg: str = ""
    log_level: str = "info"
    event_loop: str = "asyncio"
    # True when `library` came from the defaults: only then is it created (and maybe demo-filled).
    library_is_default: bool = True

    @property
    def catalog_path(self) -> Path:
        return self.data_dir / "catalog.db"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"


assert {f.name for f in dataclasses.fields(Settings)} - {"library_is_default"} == set(_BY_NAME), \
    "FIELDS and Settings must declare the same settings"


def load(
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cli: Mapping[str, Any] | None = None,
    *,
    check_paths: bool = True,
) -> Settings:
    """Build Settings from the defaults, then a TOML file, then STREAMER_* env vars, then CLI values.

    `cli` holds values already typed by argparse (None means "not given"). Every problem is
    collected, and ConfigError lists them all, each naming its key and source.
    """
    environ = environ or {}
    errors: list[str] = []
    values: dict[str, Any] = {}  # only the settings given by some source; later sources win

    if config_file is None and environ.get(ENV_CONFIG_FILE):
        config_file = Path(environ[ENV_CONFIG_FILE])
    if config_file is not None:
        values.update(_from_file(config_file, errors))
    values.update(_from_environ(environ, errors))
    values.update(_from_cli(cli or {}, errors))

    settings = Settings(**values, library_is_default="library" not in values)
    errors.extend(_inconsistencies(settings, library_given="library" in values, check_paths=check_paths))
    if errors:
        raise ConfigError(errors)
    return settings


def _from_file(config_file: Path, errors: list[str]) -> dict[str, Any]:
    """The settings of a TOML file. A file that cannot be read stops loading at once."""
    source = f"config file {config_file}"
    try:
        table = tomllib.loads(Path(config_file).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{source}: no such file"]) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([f"{source}: cannot be read: {exc}"]) from None
    base = Path(config_file).resolve().parent
    values: dict[str, Any] = {}
    for key, raw in table.items():
        field = _field_or_error(key, source, errors)
        if field is None:
            continue
        value = _convert(field, raw, source, errors, from_text=False)
        if value is not None:
            # Relative paths in a file mean "next to this file", wherever it is started from.
            values[key] = base / value if field.kind == "path" and not value.is_absolute() else value
    return values


def _from_environ(environ: Mapping[str, str], errors: list[str]) -> dict[str, Any]:
    """The settings of the STREAMER_* variables (STREAMER_CONFIG names the file, it is no setting)."""
    values: dict[str, Any] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG_FILE:
            continue
        key = name[len(ENV_PREFIX):].lower()
        field = _field_or_error(key, f"environment {name}", errors, shown=lambda f: f.env)
        if field is None:
            continue
        value = _convert(field, raw, f"environment {name}", errors, from_text=True)
        if value is not None:
            values[key] = value
    return values


def _from_cli(cli: Mapping[str, Any], errors: list[str]) -> dict[str, Any]:
    """The settings given as options; argparse has typed most of them, and None means "not given"."""
    values: dict[str, Any] = {}
    for key, raw in cli.items():
        if raw is None:
            continue
        field = _BY_NAME[key]
        value = _convert(field, raw, f"option {field.flag}", errors, from_text=isinstance(raw, str))
        if value is not None:
            values[key] = value
    return values


def _inconsistencies(settings: Settings, *, library_given: bool, check_paths: bool) -> list[str]:
    """What is wrong with the settings taken together (each value alone has been checked already)."""
    errors = []
    if check_paths and library_given and not settings.library.is_dir():
        errors.append(f"library: folder {settings.library} does not exist")
    if settings.role in ("master", "region") and len(settings.cluster_secret) < 16:
        errors.append(f"cluster_secret: a {settings.role} needs a cluster secret of at least 16 characters")
    if settings.cluster_secret in SAMPLE_SECRETS and not _all_on_loopback(settings):
        errors.append("cluster_secret: the sample secret of config/*.toml is public; it is accepted only when "
                      "every node is on loopback: set a long random one (python3 -c 'import secrets; "
                      "print(secrets.token_urlsafe(32))')")
    if settings.role == "region" and not settings.master_url.startswith(("http://", "https://")):
        errors.append("master_url: a region needs its master's URL, e.g. http://127.0.0.1:8080")
    if settings.cluster_nodes and settings.master_url and settings.master_url.rstrip("/") not in settings.cluster_nodes:
        errors.append(f"master_url: {settings.master_url} is not one of cluster_nodes ({', '.join(settings.cluster_nodes)})")
    if settings.cluster_ca_file is not None and check_paths and not settings.cluster_ca_file.is_file():
        errors.append(f"cluster_ca_file: no file {settings.cluster_ca_file}")
    if settings.cluster_url and not _is_node_url(settings.cluster_url):
        errors.append(f"cluster_url: expected http(s)://HOST:PORT with no path, not {settings.cluster_url!r}")
    if settings.sync_replicas and settings.role == "standalone":
        errors.append("sync_replicas: a standalone node has no followers to wait for (role master or region)")
    return errors


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def describe(settings: Settings) -> str:
    """The effective configuration as TOML, secrets masked: what `run.py config` prints."""
    lines = []
    for field in FIELDS:
        value = getattr(settings, field.name)
        if field.secret and value:
            shown = '"********"'
        elif isinstance(value, bool):
            shown = "true" if value else "false"
        elif value is None:  # unset: TOML has no null, so the line is shown commented out
            lines.append(f"# {field.name} =  # {field.help}")
            continue
        elif isinstance(value, tuple):
            shown = "[" + ", ".join(_toml_string(v) if isinstance(v, str) else str(v) for v in value) + "]"
        elif isinstance(value, int):
            shown = str(value)
        else:
            shown = _toml_string(str(value))
        lines.append(f"{field.name} = {shown}  # {field.help}")
    return "\n".join(lines)


def _all_on_loopback(settings: Settings) -> bool:
    """This node's address and every node URL it is configured with are loopback addresses."""
    hosts = [settings.host] + [_url_host(u) for u in (settings.master_url, settings.cluster_url,
                                                      *settings.cluster_nodes) if u]
    return all(is_loopback(h) for h in hosts)


def _url_host(url: str) -> str:
    rest = url.partition("://")[2].split("/")[0]
    return rest.rpartition(":")[0].strip("[]") if rest.count(":") and not rest.endswith("]") else rest.strip("[]")


def is_loopback(host: str) -> bool:
    """A loopback address, or localhost (streamer.auth asks the same of clients)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_node_url(value: str) -> bool:
    scheme, _, rest = value.partition("://")
    host, _, port = rest.rstrip("/").rpartition(":")
    return scheme in ("http", "https") and bool(host) and "/" not in rest.rstrip("/") and port.isdigit()


def _field_or_error(key: str, source: str, errors: list[str], shown=lambda f: f.name) -> Field | None:
    field = _BY_NAME.get(key)
    if field is None:
        names = [shown(f) for f in FIELDS]
        asked = shown(Field(key, "str", None, ""))
        close = difflib.get_close_matches(asked, names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        errors.append(f"{source}: unknown setting {asked!r}{hint}")
    return field


class _Unexpected(ValueError):
    """A value that does not fit its field: what was expected, and the value at fault."""

    def __init__(self, expected: str, raw: Any) -> None:
        super().__init__(expected)
        self.expected = expected
        self.raw = raw


def _convert(field: Field, raw: Any, source: str, errors: list[str], *, from_text: bool) -> Any:
    """Check one value against its field; append an error naming key and source when it is wrong."""
    convert = _CONVERTERS.get(field.kind, _to_text)
    try:
        return convert(field, raw, from_text)
    except _Unexpected as exc:
        errors.append(f"{source}: {field.name}: expected {exc.expected}, got {exc.raw!r}")
        return None


def _list_items(raw: Any, from_text: bool) -> list[Any] | None:
    """A TOML array as it is, or comma-separated text (blank items dropped); None for anything else."""
    if isinstance(raw, list):
        return raw
    return [i for i in str(raw).split(",") if i.strip()] if from_text else None


def _to_ints(field: Field, raw: Any, from_text: bool) -> tuple[int, ...]:
    # A TOML array, or "64,128" from the environment or a flag; a blank item is an error here.
    items = raw if isinstance(raw, list) else str(raw).split(",") if from_text else None
    if not items:
        raise _Unexpected("a list of whole numbers", raw)
    # The first bad item is the one reported, with its own bounds message.
    return tuple(_to_int(field, item, isinstance(item, str)) for item in items)


def _to_urls(field: Field, raw: Any, from_text: bool) -> tuple[str, ...]:
    items = _list_items(raw, from_text)  # e.g. "http://a:1,http://b:2" from the environment or a flag
    if items is None or not all(isinstance(i, str) and _is_node_url(i.strip()) for i in items):
        raise _Unexpected("a list of http(s)://HOST:PORT URLs", raw)
    return tuple(i.strip().rstrip("/") for i in items)


def _to_nets(field: Field, raw: Any, from_text: bool) -> tuple[str, ...]:
    items = _list_items(raw, from_text)  # addresses or CIDR networks
    try:
        return tuple(str(ipaddress.ip_network(i.strip(), strict=False)) for i in items)  # type: ignore[union-attr]
    except (TypeError, ValueError, AttributeError):
        raise _Unexpected("a list of IP addresses or networks (10.0.0.0/8)", raw) from None


def _to_bool(field: Field, raw: Any, from_text: bool) -> bool:
    if isinstance(raw, bool):
        return raw
    if from_text and str(raw).strip().lower() in ("1", "true", "yes", "on"):
        return True
    if from_text and str(raw).strip().lower() in ("0", "false", "no", "off"):
        return False
    raise _Unexpected("true or false", raw)


def _to_int(field: Field, raw: Any, from_text: bool) -> int:
    if isinstance(raw, bool):  # a bool is an int to Python, never to a reader of the file
        raise _Unexpected("an integer", raw)
    if isinstance(raw, int):
        value = raw
    elif from_text:
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise _Unexpected("an integer", raw) from None
    else:
        raise _Unexpected("an integer", raw)
    if field.minimum is not None and value < field.minimum:
        raise _Unexpected(f"an integer >= {field.minimum}", raw)
    if field.maximum is not None and value > field.maximum:
        raise _Unexpected(f"an integer <= {field.maximum}", raw)
    return value


def _to_text(field: Field, raw: Any, from_text: bool) -> str | Path:
    """The kinds written as a string: "str", "choice" and "path"."""
    if not isinstance(raw, (str, Path)):
        raise _Unexpected("a string", raw)
    text = str(raw)
    if field.kind == "choice" and text not in field.choices:
        raise _Unexpected("one of " + ", ".join(field.choices), raw)
    if field.kind == "path":
        if not text.strip():
            raise _Unexpected("a path", raw)
        return Path(text).expanduser()
    return text


# Every kind not listed here is a string of some sort.
_CONVERTERS: dict[str, Callable[[Field, Any, bool], Any]] = {
    "ints": _to_ints,
    "urls": _to_urls,
    "nets": _to_nets,
    "bool": _to_bool,
    "int": _to_int,
}
