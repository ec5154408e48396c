"""Who may use the HTTP endpoints: TLS and basic auth in the shape of a Prometheus web.yml.

The inventory's ``web:`` section names a web configuration file written exactly like
the exporter-toolkit's ``--web.config.file`` (``tls_server_config``,
``http_server_config``, ``basic_auth_users`` with bcrypt hashes), so operators reuse the
file and the habits they have from Prometheus and its exporters. The hashes live in
that file, not in the inventory, which stays free of secrets and can be shared.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import ssl
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any, Literal

import bcrypt
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PrivateAttr,
    SecretStr,
    ValidationError,
    model_validator,
)

from monitor.inventory.problems import ConfigError, Problem, explain, show, unknown_name
from monitor.inventory.yamlfile import load_yaml

# Go's crypto/tls names, as web.yml spells them; Python's ssl module can verify a client
# certificate or not ask for one, but cannot accept one without checking it, so
# RequestClientCert and RequireAnyClientCert have no equivalent here.
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert")
_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# The headers the exporter-toolkit lets an operator set; the others are aiohttp's business.
_HEADERS = ("Content-Security-Policy", "Strict-Transport-Security", "X-Content-Type-Options",
            "X-Frame-Options", "X-XSS-Protection")
# $2a$/$2b$/$2y$, a two-digit cost, 22 characters of salt and 31 of hash (htpasswd -B,
# Python's bcrypt, Go's x/crypto/bcrypt all write this).
_BCRYPT = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
# bcrypt reads the first 72 bytes of a password; 5.x refuses longer ones outright
_BCRYPT_MAX_BYTES = 72
# Successful logins remembered, so that a scrape every 15 s does not cost a bcrypt run
# (~50 ms of CPU at cost 10) each time; bounded, since every entry is a distinct password.
_CACHE_SIZE = 128


def _client_auth(value: str) -> str:
    if value in _CLIENT_AUTH:
        return value
    if value in _UNVERIFIED_CLIENT_AUTH:
        raise ValueError(
            f"{value} accepts client certificates without checking them, which vcmon "
            "does not do; use VerifyClientCertIfGiven or RequireAndVerifyClientCert with "
            "client_ca_file")
    raise ValueError(unknown_name("client_auth_type", value, list(_CLIENT_AUTH)))


class TlsServerConfig(BaseModel):
    """``tls_server_config``: the server's certificate, and which clients must show one."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    cert_file: str
    key_file: str
    client_auth_type: Annotated[str, AfterValidator(_client_auth)] = "NoClientCert"
    client_ca_file: str | None = None
    min_version: Literal["TLS12", "TLS13"] = "TLS12"
    max_version: Literal["TLS12", "TLS13"] = "TLS13"

    @model_validator(mode="after")
    def _consistent(self) -> TlsServerConfig:
        verify = self.client_auth_type != "NoClientCert"
        if self.client_ca_file is not None and not verify:
            raise ValueError("client_ca_file is set but client_auth_type is NoClientCert, so "
                             "no client is checked; set client_auth_type: "
                             "RequireAndVerifyClientCert, or remove client_ca_file")
        if verify and self.client_ca_file is None:
            raise ValueError(f"client_auth_type {self.client_auth_type} needs the CA that "
                             "signs client certificates; set client_ca_file")
        if _TLS_VERSIONS[self.min_version] > _TLS_VERSIONS[self.max_version]:
            raise ValueError(f"min_version {self.min_version} is above max_version "
                             f"{self.max_version}; lower min_version or raise max_version")
        return self

    def context(self, base: Path) -> ssl.SSLContext:
        """A server context; relative paths are taken from the web file's directory."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = _TLS_VERSIONS[self.min_version]
        context.maximum_version = _TLS_VERSIONS[self.max_version]
        cert, key = base / self.cert_file, base / self.key_file
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load cert_file {cert} with key_file {key} ({_why(exc)}); "
                             "check the paths, their permissions and that they are a PEM "
                             "certificate and its private key") from None
        context.verify_mode = _CLIENT_AUTH[self.client_auth_type]
        if self.client_ca_file is not None:
            ca = base / self.client_ca_file
            try:
                context.load_verify_locations(cafile=ca)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"cannot load client_ca_file {ca} ({_why(exc)}); check the "
                                 "path, its permissions and that it holds PEM certificates"
                                 ) from None
        return context


def _why(exc: OSError | ssl.SSLError) -> str:
    return str(exc.strerror or exc) if isinstance(exc, OSError) else str(exc)


def _known_headers(headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if name not in _HEADERS:
            raise ValueError(unknown_name("header", name, list(_HEADERS)))
        if not value or any(c in value for c in "\r\n\0"):
            raise ValueError(f"the value of {name} is empty or holds a line break; "
                             "write it on one line")
    return headers


class HttpServerConfig(BaseModel):
    """``http_server_config``: headers added to every response."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    headers: Annotated[dict[str, str], AfterValidator(_known_headers)] = {}


def _check_user_name(name: str) -> str:
    if name and ":" not in name and name.isprintable():
        return name
    raise ValueError(f"{show(name)} is not a user name; basic auth user names are printable, "
                     "non-empty and without a colon")


def _check_hash(value: Any) -> SecretStr:
    # Checked before pydantic's own type checks, whose messages would echo the value:
    # it may be a password someone wrote here by mistake.
    if isinstance(value, str) and _BCRYPT.fullmatch(value):
        return SecretStr(value)
    raise ValueError("this is not a bcrypt hash; write the hash, never the password "
                     "(vcmon hash-password or htpasswd -nBC 10 \"\" | tr -d ':\\n' makes one)")


UserName = Annotated[str, AfterValidator(_check_user_name)]
BcryptHash = Annotated[SecretStr, BeforeValidator(_check_hash)]


class WebFile(BaseModel):
    """The web configuration file, in the exporter-toolkit's ``web.yml`` shape."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    tls_server_config: TlsServerConfig | None = None
    http_server_config: HttpServerConfig = HttpServerConfig()
    basic_auth_users: dict[UserName, BcryptHash] = {}


class WebUsers:
    """The basic-auth users and their bcrypt hashes; checks a login in constant time.

    Whether a user exists does not show in the time a check takes: a name that is not
    listed is checked against a dummy hash of the same cost (as the exporter-toolkit
    does). Successful logins are remembered under a keyed hash of name and password,
    never the password itself, so that scrapes do not each cost a bcrypt run.
    """

    def __init__(self, hashes: dict[str, bytes]) -> None:
        self._hashes = hashes
        # the dummy costs as much as the dearest real hash: a missing name is never faster
        cost = max(int(h[4:6]) for h in hashes.values())
        self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=cost))
        self._key = secrets.token_bytes(32)
        self._remembered: OrderedDict[bytes, None] = OrderedDict()

    def __repr__(self) -> str:
        return f"WebUsers({len(self._hashes)} users)"

    def _fingerprint(self, user: str, password: str) -> bytes:
        message = user.encode() + b"\0" + password.encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def remembered(self, user: str, password: str) -> bool:
        """A login that succeeded before (cheap: run it on the event loop)."""
        return self._fingerprint(user, password) in self._remembered

    def verify(self, user: str, password: str) -> bool:
        """Check a login with bcrypt (~50 ms of CPU at cost 10: run it in a worker thread)."""
        stored = self._hashes.get(user)
        secret = password.encode()
        known = stored is not None and len(secret) <= _BCRYPT_MAX_BYTES
        ok = bcrypt.checkpw(secret[:_BCRYPT_MAX_BYTES], stored if stored else self._dummy)
        if not (ok and known):
            return False
        self._remembered[self._fingerprint(user, password)] = None
        while len(self._remembered) > _CACHE_SIZE:
            self._remembered.popitem(last=False)
        return True


class WebSettings(BaseModel):
    """The inventory's ``web:`` section: the web.yml file and what the HTTP server allows."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # None: plain HTTP and no login, as without a web.yml in Prometheus
    config_file: str | None = None
    # POST /-/reload; SIGHUP reloads either way (Prometheus: --web.enable-lifecycle)
    enable_lifecycle: bool = True

    _file: WebFile = PrivateAttr(default_factory=WebFile)
    _users: WebUsers | None = PrivateAttr(default=None)
    _tls: ssl.SSLContext | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _load(self) -> WebSettings:
        if self.config_file is not None:
            try:
                self._file, self._tls = load_web_file(self.config_file)
            except ConfigError as exc:
                raise ValueError("; ".join(map(str, exc.problems))) from None
        hashes = {name: h.get_secret_value().encode()
                  for name, h in self._file.basic_auth_users.items()}
        self._users = WebUsers(hashes) if hashes else None
        return self

    def __reduce__(self) -> tuple[Any, tuple[str | None, bool]]:
        # The TLS context and the users' keyed cache cannot be pickled, and the daemon
        # reads inventories in a child process: they are rebuilt from the file here.
        return _rebuilt, (self.config_file, self.enable_lifecycle)

    @property
    def users(self) -> WebUsers | None:
        """None: no login asked."""
        return self._users

    @property
    def tls(self) -> ssl.SSLContext | None:
        """None: plain HTTP."""
        return self._tls

    @property
    def tls_server_config(self) -> TlsServerConfig | None:
        return self._file.tls_server_config

    @property
    def headers(self) -> dict[str, str]:
        return self._file.http_server_config.headers


def _rebuilt(config_file: str | None, enable_lifecycle: bool) -> WebSettings:
    return WebSettings(config_file=config_file, enable_lifecycle=enable_lifecycle)


def load_web_file(path: str) -> tuple[WebFile, ssl.SSLContext | None]:
    """The web.yml at ``path`` and its TLS context; ConfigError naming file, line and field."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise ConfigError([Problem(path, None, "", f"cannot read the web configuration file "
                                   f"({why}); check web.config_file and its permissions")]
                          ) from None
    # the exporter-toolkit accepts an empty file (comments at most): no TLS, no login
    if all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines()):
        return WebFile(), None
    document = load_yaml(text, path)
    if document.problems:
        raise ConfigError(document.problems)
    try:
        web = WebFile.model_validate(document.data)
        tls = web.tls_server_config
        return web, None if tls is None else tls.context(Path(path).parent)
    except ValidationError as exc:
        raise ConfigError([document.problem(e["loc"], explain(e, WebFile))
                           for e in exc.errors()]) from None
    except ValueError as exc:
        raise ConfigError([document.problem(("tls_server_config",), str(exc))]) from None
