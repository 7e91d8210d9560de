"""Settings: precedence TOML < env < CLI, and one clear line per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

import config
from config import ConfigError, Settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_defaults():
    settings = config.load(None, {}, {})
    assert settings == Settings()
    assert settings.host == "127.0.0.1" and settings.port == 8080 and settings.library_is_default


def test_precedence_toml_env_cli(tmp_path):
    (tmp_path / "lib").mkdir()
    path = write(tmp_path, 'port = 9000\nhost = "0.0.0.0"\nlibrary = "lib"\nscan_on_start = false\n')
    s = config.load(path, {}, {})
    assert (s.port, s.host, s.scan_on_start) == (9000, "0.0.0.0", False)
    assert s.library == tmp_path / "lib" and not s.library_is_default  # relative to the file
    s = config.load(path, {"STREAMER_PORT": "9001", "STREAMER_SCAN_ON_START": "yes"}, {})
    assert (s.port, s.scan_on_start) == (9001, True)
    s = config.load(path, {"STREAMER_PORT": "9001"}, {"port": "9002", "host": None})
    assert (s.port, s.host) == (9002, "0.0.0.0")


def test_config_file_from_env(tmp_path):
    path = write(tmp_path, "port = 9100\n")
    assert config.load(None, {"STREAMER_CONFIG": str(path)}, {}).port == 9100


@pytest.mark.parametrize("toml, env, cli, expected", [
    ("prot = 1\n", {}, {}, "config file {f}: unknown setting 'prot' (did you mean port?)"),
    ('port = "x"\n', {}, {}, "config file {f}: port: expected an integer, got 'x'"),
    ("port = 70000\n", {}, {}, "config file {f}: port: expected an integer <= 65535, got 70000"),
    ("", {"STREAMER_PORT": "eighty"}, {}, "environment STREAMER_PORT: port: expected an integer, got 'eighty'"),
    ("", {"STREAMER_PROT": "1"}, {}, "environment STREAMER_PROT: unknown setting 'STREAMER_PROT' "
                                     "(did you mean STREAMER_PORT?)"),
    ("", {}, {"role": "boss"}, "option --role: role: expected one of standalone, master, region, got 'boss'"),
    ('library = "/no/such/folder"\n', {}, {}, "library: folder /no/such/folder does not exist"),
    ("scan_on_start = 1\n", {}, {}, "config file {f}: scan_on_start: expected true or false, got 1"),
    ("port = \n", {}, {}, "config file {f}: cannot be read"),
])
def test_errors_name_key_and_source(tmp_path, toml, env, cli, expected):
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as info:
        config.load(path, env, cli)
    assert any(line.startswith(expected.format(f=path)) for line in info.value.lines), info.value.lines


def test_all_errors_are_reported_together(tmp_path):
    path = write(tmp_path, 'port = "x"\nbogus = 1\n')
    with pytest.raises(ConfigError) as info:
        config.load(path, {"STREAMER_CACHE_MAX_MB": "1"}, {})
    assert len(info.value.lines) == 3


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        config.load(tmp_path / "absent.toml", {}, {})


def test_example_file_is_valid():
    example = Path(config.__file__).parent / "standalone.toml"
    settings = config.load(example, {}, {}, check_paths=False)
    assert settings.role == "standalone"


def test_every_setting_is_in_the_example_config():
    # docs/configuration.md documents every key too (tests/test_docs.py checks that)
    example = (Path(config.__file__).parent / "standalone.toml").read_text()
    for field in config.FIELDS:
        assert f"{field.name} = " in example, field.name


def test_describe_prints_every_setting():
    text = config.describe(Settings())
    for field in config.FIELDS:
        assert f"{field.name} = " in text


def test_cluster_url_and_sync_replicas_are_checked():
    load = config.load
    assert load(cli={"cluster_url": "http://10.0.0.2:8080"}, check_paths=False).cluster_url == "http://10.0.0.2:8080"
    for bad in ("http://10.0.0.2", "ftp://h:1", "http://h:1/path"):
        with pytest.raises(ConfigError, match="cluster_url"):
            load(cli={"cluster_url": bad}, check_paths=False)
    with pytest.raises(ConfigError, match="sync_replicas: a standalone node has no followers"):
        load(cli={"sync_replicas": "1"}, check_paths=False)
    settings = load(cli={"sync_replicas": "1", "role": "master", "cluster_secret": "x" * 16}, check_paths=False)
    assert (settings.sync_replicas, settings.sync_wait_ms, settings.sync_fallback) == (1, 3000, "refuse")
