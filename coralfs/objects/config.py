"""``config.toml``: format version, storage and cache settings, aliases; and the user's
own config (``$XDG_CONFIG_HOME/coralfs/config.toml``) for what a repository must not
decide for itself (``commands.trust``).

Every key has a type and a range (strings a validator), checked by :meth:`Config.set`
and again when a file is read, so a hand-edited value is refused with a one-line error
naming the key and what it allows, before any command uses it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .durable import write_durable
from .errors import CoralError

FORMAT_VERSION = 1

REPO, USER, PROFILE = "repo", "user", "profile"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ALIAS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_PROFILE_NAME = _ALIAS_NAME
# Key names that hold credentials: never in a repository's config or a profile, which are
# shared with the repository (the environment and each cloud's own files hold them).
_SECRET = re.compile(r"secret|token|password|passwd|credential|private_key|access_key|account_key|sas|connection_string",
                     re.IGNORECASE)


def _plain_text(limit: int) -> Callable[[str], str | None]:
    def check(v: str) -> str | None:
        if _CONTROL.search(v):
            return "no control characters (tabs, newlines, escapes)"
        if len(v) > limit:
            return f"at most {limit} characters"
        return None
    return check


def _alias_command(v: str) -> str | None:
    try:
        words = shlex.split(v)
    except ValueError as e:
        return f"a command line that parses ({e})"
    if not words:
        return "a non-empty command line"
    return _plain_text(4096)(v)


@dataclass(frozen=True)
class Key:
    default: Any
    type: type
    lo: int | None = None
    hi: int | None = None
    check: Callable[[str], str | None] | None = None
    # Where the key may be set: "both" (the user's config, a repository's or a profile),
    # REPO (a repository's or a profile) or USER (only the user's own).
    scope: str = "both"
    what: str = ""

    def allowed(self) -> str:
        if self.type is bool:
            return "true or false"
        if self.type is int:
            return f"a whole number from {_human(self.lo)} to {_human(self.hi)}"
        return self.what or "text"


def _human(n: int | None) -> str:
    for unit, shift in (("g", 30), ("m", 20), ("k", 10)):
        if n and n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


KEYS: dict[str, Key] = {
    "core.format": Key(FORMAT_VERSION, int, FORMAT_VERSION, FORMAT_VERSION, scope=REPO),
    # The profile (REPO/profiles/NAME.toml) whose values override the repository's;
    # $CORALFS_PROFILE overrides this.
    "core.profile": Key("", str, check=lambda v: None if not v or _PROFILE_NAME.fullmatch(v) else
                        "a profile name: letters, digits, '-' and '_'", scope=REPO, what="a profile name or empty"),
    # Tensor chunks: below 4 KiB the per-object cost dominates; above 256 MiB one chunk
    # (held decoded in memory, a few per worker) costs too much memory.
    "storage.chunk_size": Key(4 << 20, int, 4 << 10, 256 << 20),
    # zstd levels (1 fastest .. 22 smallest).
    "storage.tensor_level": Key(1, int, 1, 22),
    "storage.literal_level": Key(3, int, 1, 22),
    # Decodes a read may need (1: every version a keyframe); readers stop at 64.
    "storage.max_chain": Key(8, int, 1, 64),
    "storage.similarity": Key(True, bool),
    "cache.size": Key(512 << 20, int, 0, 1 << 40),
    "user.name": Key("", str, check=_plain_text(200), scope="both",
                     what="a name without control characters, at most 200 characters"),
    # Auto-commit rules of writable mounts (`coralfs mount --write --auto-commit S`; the
    # last two also for `coralfs watch`):
    # comma-separated globs of the paths whose changes count (empty: all), the fewest
    # seconds between two auto-commits, and how many `auto/BRANCH/N` tags to keep (0: none).
    "staging.auto_commit_paths": Key("", str, check=_plain_text(4096),
                                     what="comma-separated globs without control characters"),
    "staging.min_interval": Key(0, int, 0, 365 * 86400),
    "staging.keep_last": Key(0, int, 0, 1_000_000),
    # Mount defaults (`coralfs mount`; an option given on the command line wins):
    # decoding threads, the decoded-chunk cache of a local mount (0: cache.size), other
    # users let in, a writable mount's auto-commit quiet seconds (0: none); remote mounts'
    # chunk cache on disk, its budget and how long a read may wait for the store.
    "mount.threads": Key(2, int, 1, 64),
    "mount.cache_size": Key(0, int, 0, 1 << 40),
    "mount.allow_other": Key(False, bool),
    "mount.auto_commit": Key(0, int, 0, 365 * 86400),
    "mount.cache_dir": Key("", str, check=_plain_text(4096),
                           what="a directory without control characters (empty: $XDG_CACHE_HOME/coralfs)"),
    "mount.remote_cache_size": Key(10 << 30, int, 1 << 20, 1 << 44),
    "mount.fetch_timeout": Key(30, int, 1, 3600),
    # Run REPO/commands/NAME as `coralfs NAME`: only when the user says so, never a
    # repository's own config (a typo would run code someone else wrote).
    "commands.trust": Key(False, bool, scope=USER),
}
ALIAS = Key("", str, check=_alias_command, what="a coralfs command line, e.g. \"commit -m checkpoint\"")


def _remote_url(v: str) -> str | None:
    """A remote or endpoint URL without secrets: credentials come from each cloud's
    environment and files, never from a repository's config (which is shared, copied, pushed)."""
    from urllib.parse import urlsplit
    why = _plain_text(2048)(v)
    if why:
        return why
    try:
        u = urlsplit(v)
    except ValueError as e:
        return f"a URL that parses ({e})"
    if "@" in u.netloc:
        return "no credentials in the URL (user:password@): they come from the environment (AWS_*, ~/.aws, " \
               "GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_CONNECTION_STRING ...)"
    if u.query or u.fragment:
        return "no '?' or '#' parts (tokens and signatures come from the environment)"
    return None


# `remote.NAME.FIELD`: what `coralfs remote add` records (TOML: [remote] "NAME.FIELD" = ...).
# ``partial``: the glob of a partial clone (objects outside it are read from this remote
# on demand); set by `coralfs clone --filter`.
REMOTE_FIELDS: dict[str, Key] = {
    "url": Key("", str, check=_remote_url, what="a remote URL (s3://, gs://, az://, file:///) without credentials"),
    "endpoint": Key("", str, check=_remote_url, what="a service URL without credentials"),
    "profile": Key("", str, check=_plain_text(200), what="a profile name without control characters"),
    "partial": Key("", str, check=_plain_text(4096), what="a glob without control characters"),
    # Backend options (coralfs/remote/_common.py Limits, s3/gcs/azure): seconds and counts.
    "region": Key("", str, check=_plain_text(100), what="a region name"),
    "project": Key("", str, check=_plain_text(200), what="a GCP project id"),
    "account": Key("", str, check=_plain_text(200), what="a storage account name"),
    "connect_timeout": Key(10, int, 1, 3600),
    "read_timeout": Key(30, int, 1, 3600),
    "request_timeout": Key(600, int, 1, 86400),
    "retries": Key(3, int, 0, 100),
    "retry_timeout": Key(60, int, 1, 86400),
}
# What open_blobs takes as the URL and endpoint, or what only the clone reads; the other
# fields are the backend's options.
REMOTE_NOT_OPTIONS = ("url", "endpoint", "partial")
_REMOTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def remotes(config: Config) -> dict[str, dict[str, str]]:
    """Remote name -> its fields (url, endpoint, profile, partial) from ``config``."""
    out: dict[str, dict[str, str]] = {}
    for key, value in config.data.get("remote", {}).items():
        name, _, field = key.rpartition(".")
        out.setdefault(name, {})[field] = value
    return dict(sorted(out.items()))

class ConfigError(CoralError):
    exit_code = 2


def user_config_path() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "coralfs", "config.toml")


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


def _spec(key: str, scope: str) -> Key:
    section, _, name = key.partition(".")
    if not name or not section:
        raise ConfigError(f"config keys look like section.name, not {key!r}")
    if scope != USER and _SECRET.search(key.rsplit(".", 1)[1]):
        raise ConfigError(f"config {key} looks like a secret: secrets never go into a repository's config or profile "
                          "(they are shared with it); use the environment or your cloud's credentials file")
    if scope == PROFILE:
        if key in ("core.format", "core.profile") or section == "alias":
            raise ConfigError(f"config {key} belongs to the repository's config, not to a profile")
        scope = REPO
    if section == "alias":
        if scope != REPO:
            raise ConfigError(f"aliases live in the repository config: drop --user for {key}")
        if not _ALIAS_NAME.fullmatch(name):
            raise ConfigError(f"alias name {name!r}: letters, digits, '-' and '_' only (at most 64)")
        return ALIAS
    if section == "remote":
        rname, _, field = name.rpartition(".")
        if scope != REPO:
            raise ConfigError(f"remotes live in the repository config: drop --user for {key}")
        if not _REMOTE_NAME.fullmatch(rname) or field not in REMOTE_FIELDS:
            raise ConfigError(f"remote keys look like remote.NAME.{{{','.join(REMOTE_FIELDS)}}} with NAME of letters, "
                              f"digits, '-' and '_' (at most 64), not {key!r}")
        return REMOTE_FIELDS[field]
    spec = KEYS.get(key)
    if spec is None:
        known = ", ".join(k for k, s in sorted(KEYS.items()) if s.scope in (scope, "both"))
        extra = ", alias.NAME, remote.NAME.FIELD" if scope == REPO else ""
        raise ConfigError(f"unknown config key {key!r}; known: {known}{extra}")
    if spec.scope not in (scope, "both"):
        if spec.scope == USER:
            raise ConfigError(f"config {key} is a user setting, never read from a repository: "
                              f"`coralfs config set --user {key} VALUE`")
        raise ConfigError(f"config {key} belongs to a repository's config: drop --user")
    return spec


def check_value(key: str, value: Any, scope: str = REPO) -> Any:
    """``value`` if ``key`` takes it, else ConfigError naming the key and what it allows."""
    spec = _spec(key, scope)

    def refuse(why: str = "") -> ConfigError:
        shown = value if not isinstance(value, str) or len(value) <= 60 else value[:57] + "..."
        return ConfigError(f"config {key} = {shown!r} is refused{': ' + why if why else ''}; "
                           f"{key} takes {spec.allowed()}")

    if spec.type is bool:
        if not isinstance(value, bool):
            raise refuse()
    elif spec.type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise refuse()
        if key == "core.format" and value != FORMAT_VERSION:
            raise ConfigError(f"config core.format = {value!r}: this coralfs reads format {FORMAT_VERSION} "
                              "(core.format is set by coralfs itself)")
        if not spec.lo <= value <= spec.hi:
            raise refuse("out of range")
    else:
        if not isinstance(value, str):
            raise refuse()
        why = spec.check(value) if spec.check else None
        if why:
            raise refuse(f"needs {why}")
    return value


@dataclass
class Layer:
    """One scope of the chain a value is looked up in (see :meth:`Config.explain`)."""

    scope: str        # "user", "profile prod", "environment", "command line"
    source: str       # where its values come from: a file, variables, options
    values: dict[str, Any]


class Config:
    """One config file (``scope`` REPO: a repository's, USER: the user's own, PROFILE: a
    profile's), and for a repository's the whole chain a value is looked up in:
    defaults < user < repository < profile < environment < command line, as git users
    expect. ``below`` and ``above`` hold the other scopes, lowest first."""

    def __init__(self, path: str, scope: str = REPO, *, read: bool = True) -> None:
        self.path = path
        self.scope = scope
        self.data: dict[str, dict[str, Any]] = {}
        self.below: list[Layer] = []
        self.above: list[Layer] = []
        if read and os.path.exists(path):
            self.data = self._read()

    def _own(self, key: str) -> tuple[bool, Any]:
        section, _, name = key.partition(".")
        if section in self.data and name in self.data[section]:
            return True, self.data[section][name]
        return False, None

    def explain(self, key: str) -> list[tuple[Layer, bool, Any]]:
        """Every scope from the default up, whether it sets ``key`` and to what; the last
        one that sets it wins."""
        if key not in KEYS and not key.startswith("alias."):
            _spec(key, self.scope)   # the one-line "unknown config key" error
        chain = [(Layer("default", "built in", {}), key in KEYS, KEYS[key].default if key in KEYS else None)]
        chain += [(layer, key in layer.values, layer.values.get(key)) for layer in self.below]
        has, value = self._own(key)
        chain.append((Layer("repository" if self.scope == REPO else self.scope, self.path, {}), has, value))
        for layer in self.above:
            shown = Layer(layer.scope, "$" + env_var(key), {}) if layer.scope == "environment" else layer
            chain.append((shown, key in layer.values, layer.values.get(key)))
        return chain

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
            data = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(f"{self.path} is not UTF-8 text; fix or remove it") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{self.path} is not valid TOML ({e}); fix or remove the bad line") from None
        except OSError as e:
            raise ConfigError(f"{self.path}: cannot read it ({e.strerror})") from None
        for section, table in data.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{self.path}: {section!r} must be a [section] of keys, not a value")
            for name, value in table.items():
                try:
                    check_value(f"{section}.{name}", value, self.scope)
                except ConfigError as e:
                    raise ConfigError(f"{self.path}: {e} (edit the file to fix it)") from None
        return data

    def get(self, key: str) -> Any:
        for layer in reversed(self.above):
            if key in layer.values:
                return layer.values[key]
        has, value = self._own(key)
        if has:
            return value
        for layer in reversed(self.below):
            if key in layer.values:
                return layer.values[key]
        if key in KEYS:
            return KEYS[key].default
        raise KeyError(key)

    def flat(self) -> dict[str, Any]:
        """This file's own values, ``section.name`` -> value."""
        return {f"{section}.{name}": v for section, d in self.data.items() for name, v in d.items()}

    def set(self, key: str, text: str) -> Any:
        spec = _spec(key, self.scope)
        try:
            value = text if spec.type is str else _parse_value(key, text, spec.type)
        except ConfigError:
            shown = text if len(text) <= 60 else text[:57] + "..."
            suffixes = " (k/m/g suffixes allowed)" if spec.type is int else ""
            raise ConfigError(f"config {key} = {shown!r} is refused; {key} takes {spec.allowed()}{suffixes}") from None
        if key == "core.format" and value != FORMAT_VERSION:
            raise ConfigError("core.format is set by coralfs itself")
        check_value(key, value, self.scope)
        section, _, name = key.partition(".")
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
        """Every key with the value in effect (the scopes above and below included)."""
        scope = REPO if self.scope == PROFILE else self.scope
        out = {k: v.default for k, v in KEYS.items() if v.scope in (scope, "both")}
        for layer in self.below:
            out.update(layer.values)
        out.update(self.flat())
        for layer in self.above:
            out.update(layer.values)
        return dict(sorted(out.items()))

    def save(self) -> None:
        if self.scope == USER:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        write_durable(self.path, self.text().encode(), mode=0o600 if self.scope == USER else None)  # None: the repository's mode

    def text(self) -> str:
        """This file's values as TOML."""
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
        return "\n".join(lines)


def user_config() -> Config:
    return Config(user_config_path(), USER)


# -- the chain of scopes and profiles -------------------------------------------------------

PROFILES = "profiles"
ENV_PREFIX = "CORALFS_"


def env_var(key: str) -> str:
    """The environment variable that sets ``key``: CORALFS_STORAGE_MAX_CHAIN."""
    return ENV_PREFIX + key.upper().replace(".", "_")


def parse_setting(key: str, text: str, scope: str, where: str) -> Any:
    """A value given as text (environment, command line), checked like ``config set``."""
    spec = _spec(key, scope)
    try:
        value = text if spec.type is str else _parse_value(key, text, spec.type)
        return check_value(key, value, scope)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def profile_path(repo_path: str, name: str) -> str:
    if not _PROFILE_NAME.fullmatch(name or ""):
        raise ConfigError(f"profile name {name!r}: letters, digits, '-' and '_' only (at most 64)")
    return os.path.join(repo_path, PROFILES, name + ".toml")


def profile_names(repo_path: str) -> list[str]:
    d = os.path.join(repo_path, PROFILES)
    if not os.path.isdir(d):
        return []
    return sorted(n[:-5] for n in os.listdir(d) if n.endswith(".toml") and _PROFILE_NAME.fullmatch(n[:-5]))


def load_profile(repo_path: str, name: str, *, why: str = "") -> Config:
    path = profile_path(repo_path, name)
    if not os.path.isfile(path):
        known = ", ".join(profile_names(repo_path)) or "none yet"
        raise ConfigError(f"{why}profile {name!r} does not exist (profiles: {known}); "
                          f"create it with `coralfs config profile create {name}`")
    return Config(path, PROFILE)


def active_profile(cfg: Config, environ=os.environ) -> tuple[str | None, str]:
    """The profile in use and what chose it ($CORALFS_PROFILE, else core.profile)."""
    name = environ.get(ENV_PREFIX + "PROFILE")
    if name:
        return name, "$CORALFS_PROFILE"
    has, value = cfg._own("core.profile")
    return (value or None), "core.profile"


def attach_scopes(cfg: Config, repo_path: str, *, overrides: dict[str, str] | None = None,
                  environ=os.environ) -> None:
    """Give a repository's config its other scopes: the user's config below it; the active
    profile, the environment (CORALFS_SECTION_NAME) and command-line overrides above."""
    user = user_config()
    cfg.below = [Layer("user", user.path, {k: v for k, v in user.flat().items()
                                           if k in KEYS and KEYS[k].scope != USER})]
    cfg.above = []
    name, chosen_by = active_profile(cfg, environ)
    if name:
        prof = load_profile(repo_path, name, why=f"{chosen_by} names a profile that is missing: ")
        cfg.above.append(Layer(f"profile {name}", prof.path, prof.flat()))
    env = {k: parse_setting(k, environ[env_var(k)], REPO, f"${env_var(k)}")
           for k, spec in KEYS.items() if spec.scope != USER and k != "core.format" and env_var(k) in environ}
    cfg.above.append(Layer("environment", "CORALFS_* variables", env))
    cmd = {k: parse_setting(k, v, REPO, f"-c {k}") for k, v in (overrides or {}).items()}
    cfg.above.append(Layer("command line", "-c KEY=VALUE", cmd))


def settings(repo_path: str | None, overrides: dict[str, str] | None = None, environ=os.environ) -> Config:
    """The settings in effect for a command on ``repo_path`` (its whole chain of scopes),
    or, with None (a remote's URL, no repository here), the user's config with the
    environment and command line above it."""
    if repo_path is not None:
        cfg = Config(os.path.join(repo_path, "config.toml"))
        attach_scopes(cfg, repo_path, overrides=overrides, environ=environ)
        return cfg
    cfg = Config(user_config_path(), USER)
    env = {k: parse_setting(k, environ[env_var(k)], USER, f"${env_var(k)}")
           for k, spec in KEYS.items() if spec.scope != REPO and env_var(k) in environ}
    cmd = {k: parse_setting(k, v, USER, f"-c {k}") for k, v in (overrides or {}).items()}
    cfg.above = [Layer("environment", "CORALFS_* variables", env), Layer("command line", "-c KEY=VALUE", cmd)]
    return cfg


def create_profile(repo_path: str, name: str, source: str | None = None) -> Config:
    path = profile_path(repo_path, name)
    if os.path.exists(path):
        raise ConfigError(f"profile {name!r} exists already; `coralfs config profile show {name}` shows it")
    prof = Config(path, PROFILE, read=False)
    if source:
        prof.data = {s: dict(d) for s, d in load_profile(repo_path, source).data.items()}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    prof.save()
    return prof


def import_profile(repo_path: str, text_path: str, name: str | None = None, *, force: bool = False) -> str:
    """A profile from an exported TOML file (validated like any profile: secrets and
    unknown keys refused, nothing written then)."""
    name = name or os.path.splitext(os.path.basename(text_path))[0]
    path = profile_path(repo_path, name)
    if os.path.exists(path) and not force:
        raise ConfigError(f"profile {name!r} exists already: pass --name NEW or --force")
    if not os.path.isfile(text_path):
        raise ConfigError(f"{text_path}: no such file")
    src = Config(text_path, PROFILE)   # raises on anything a profile may not hold
    prof = Config(path, PROFILE, read=False)
    prof.data = src.data
    os.makedirs(os.path.dirname(path), exist_ok=True)
    prof.save()
    return name


def export_profile(repo_path: str, name: str) -> str:
    return load_profile(repo_path, name).text()
