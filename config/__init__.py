"""Settings: one frozen object, declared once, loaded from TOML < STREAMER_* env < CLI flags.

`load()` is pure apart from reading the TOML file it is pointed at and checking that the library
folder exists, so tests can build as many differently configured settings as they like.
"""

from config._settings import FIELDS, ConfigError, Field, Settings, describe, is_loopback, load

__all__ = ["FIELDS", "ConfigError", "Field", "Settings", "load", "describe", "is_loopback"]
