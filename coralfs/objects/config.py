"""``config.toml``: format version, storage and cache settings, aliases."""

from __future__ import annotations

import json
import os
import tomllib
from typing import Any

from .durable import write_durable
from .errors import CoralError

FORMAT_VERSION = 1

# key -> (default, type). Only known keys (and alias.*) may be set.
DEFAULTS: dict[str, tuple[Any, type]] = {
    "core.format": (FORMAT_VERSION, int),
    "storage.chunk_size": (4 << 20, int),
    "storage.tensor_level": (1, int),
    "storage.literal_level": (3, int),
    "storage.max_chain": (8, int),
    "storage.similarity": (True, bool),
    "cache.size": (512 << 20, int),
    "user.name": ("", str),
    # Auto-commit rules of writable mounts (`coralfs mount --write --auto-commit S`; the
    # last two also for `coralfs watch`):
    # comma-separated globs of the paths whose changes count (empty: all), the fewest
    # seconds between two auto-commits, and how many `auto/BRANCH/N` tags to keep (0: none).
    "staging.auto_commit_paths": ("", str),
    "staging.min_interval": (0, int),
    "staging.keep_last": (0, int),
}


class ConfigError(CoralError):
    exit_code = 2


def _parse_value(key: str, text: str, typ: type) -> Any:
    if typ is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"config {key} takes true or false, not {text!r}")
    if typ is int:
        try:
            mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1:].lower(), 1)
            v = int(text[:-1] if mult > 1 else text) * mult
        except ValueError:
            raise ConfigError(f"config {key} takes a whole number (k/m/g suffixes allowed), not {text!r}") from None
        if v < 0:
            raise ConfigError(f"config {key} must not be negative")
        return v
    return text


class Config:
    def __init__(self, path: str) -> None:
        self.path = path
        self.data: dict[str, dict[str, Any]] = {}
        if os.path.exists(path):
            try:
                with open(path, "rb") as f:
                    self.data = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"{path} is not valid TOML ({e}); fix or remove the bad line") from None

    def get(self, key: str) -> Any:
        section, _, name = key.partition(".")
        if section in self.data and name in self.data[section]:
            return self.data[section][name]
        if key in DEFAULTS:
            return DEFAULTS[key][0]
        raise KeyError(key)

    def set(self, key: str, text: str) -> Any:
        section, _, name = key.partition(".")
        if not name:
            raise ConfigError(f"config keys look like section.name, not {key!r}")
        if section == "alias":
            value: Any = text
        elif key in DEFAULTS:
            value = _parse_value(key, text, DEFAULTS[key][1])
        else:
            raise ConfigError(f"unknown config key {key!r}; known: {', '.join(sorted(DEFAULTS))}, alias.NAME")
        if key == "core.format" and value != FORMAT_VERSION:
            raise ConfigError("core.format is set by coralfs itself")
        self.data.setdefault(section, {})[name] = value
        self.save()
        return value

    def unset(self, key: str) -> None:
        section, _, name = key.partition(".")
        if name not in self.data.get(section, {}):
            raise ConfigError(f"config {key} is not set")
        del self.data[section][name]
        self.save()

    def items(self) -> dict[str, Any]:
        out = {k: v[0] for k, v in DEFAULTS.items()}
        for section, d in self.data.items():
            for name, v in d.items():
                out[f"{section}.{name}"] = v
        return dict(sorted(out.items()))

    def save(self) -> None:
        lines = []
        for section in sorted(self.data):
            lines.append(f"[{section}]")
            for name in sorted(self.data[section]):
                v = self.data[section][name]
                if isinstance(v, bool):
                    txt = "true" if v else "false"
                elif isinstance(v, int):
                    txt = str(v)
                else:
                    txt = json.dumps(str(v))  # a valid TOML basic string
                key = name if name.replace("-", "").replace("_", "").isalnum() else json.dumps(name)
                lines.append(f"{key} = {txt}")
            lines.append("")
        write_durable(self.path, "\n".join(lines).encode())
