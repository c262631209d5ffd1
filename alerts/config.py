"""Configuration of alert notification: receivers, the routing tree, inhibition.

``monitor.config.AlertsConfig`` extends ``NotifyConfig``, so these keys live in
the ``alerts:`` section next to ``console`` and ``jsonl``::

    alerts:
      slack:
        token_file: /var/run/secrets/inferwatch/slack-token   # or INFERWATCH_ALERTS__SLACK__TOKEN
      receivers:
        security: {channel: "security-oncall", mention: "<!subteam^S0123ABC>"}
        ml: {channel: "ml-alerts"}
      route:
        receiver: ml
        routes:
          - matchers: ["kind=~flooding|extraction|evasion"]
            receiver: security

Receivers are merged over the defaults by name, so overriding one key (say
``INFERWATCH_ALERTS__RECEIVERS__SECURITY__CHANNEL``) keeps the rest.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from alerts.matchers import Matcher
from alerts.severity import LADDER


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_matchers(values: list[str]) -> list[str]:
    for text in values:
        Matcher.parse(text)  # ValueError names the bad matcher
    return values


def _http_url(text: str) -> bool:
    parts = urlsplit(text)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


class SlackConfig(_Section):
    """The Slack app (one bot token serves every channel receiver)."""

    token: SecretStr | None = None  # bot token xoxb-…; give token_file for a mounted secret
    base_url: str = "https://slack.com/api/"
    timeout_s: float = Field(10.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        if not _http_url(v):
            raise ValueError(f"{v[:80]!r} is not an http(s):// URL")
        return v


class ReceiverConfig(_Section):
    """Where one receiver's notifications go: a Slack channel (bot token, threads),
    a Slack incoming webhook (no threads, no edits) or a generic JSON webhook."""

    channel: str | None = None
    webhook_url: SecretStr | None = None
    url: SecretStr | None = None  # generic JSON POST (Alertmanager-like payload)
    mention: str | None = None  # e.g. "<!subteam^S0123ABC>", prefixed to alerts that may mention
    mention_severities: list[str] = Field(
        default_factory=lambda: [name for name, sev in LADDER.items() if sev.mention])

    @field_validator("webhook_url", "url")
    @classmethod
    def _webhook(cls, v: SecretStr | None) -> SecretStr | None:
        """Named without being shown: a webhook URL is a credential."""
        if v is not None and not _http_url(v.get_secret_value()):
            raise ValueError("not an http(s):// URL")
        return v

    @field_validator("mention_severities")
    @classmethod
    def _severities(cls, v: list[str]) -> list[str]:
        unknown = [s for s in v if s not in LADDER]
        if unknown:
            raise ValueError(f"{', '.join(map(repr, unknown))} is not a severity "
                             f"(one of {', '.join(LADDER)})")
        return v

    @model_validator(mode="after")
    def _one_transport(self) -> ReceiverConfig:
        given = [k for k in ("channel", "webhook_url", "url") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of channel, webhook_url, url (got {', '.join(given)})")
        return self


class RouteConfig(_Section):
    """A node of the routing tree; unset keys are inherited from the parent."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    receiver: str | None = None
    matchers: list[str] = Field(default_factory=list)
    group_by: list[str] | None = None
    group_wait_s: float | None = Field(None, ge=0)
    group_interval_s: float | None = Field(None, gt=0)
    repeat_interval_s: float | None = Field(None, gt=0)
    continue_: bool = Field(False, alias="continue")
    routes: list[RouteConfig] = Field(default_factory=list)

    _matchers = field_validator("matchers")(_check_matchers)


class InhibitRule(_Section):
    """While an alert matching ``source`` fires, alerts matching ``target`` with the
    same values of the ``equal`` labels are not notified."""

    source: list[str]
    target: list[str]
    equal: list[str] = Field(default_factory=list)

    _source = field_validator("source", "target")(_check_matchers)


SECURITY_KINDS = "flooding|extraction|evasion"


def _default_route() -> RouteConfig:
    return RouteConfig(
        receiver="ml", group_by=["kind", "model"], group_wait_s=30.0, group_interval_s=300.0,
        repeat_interval_s=4 * 3600.0,
        routes=[RouteConfig(matchers=[f"kind=~{SECURITY_KINDS}"], receiver="security")],
    )


def _default_inhibit() -> list[InhibitRule]:
    # a client (or source address) alerted for extraction or evasion need not also ping
    # for flooding; both labels are compared, as an absent label equals an absent one
    return [InhibitRule(source=["kind=~extraction|evasion", "status=firing"],
                        target=["kind=flooding"], equal=["model", "client_id", "source_ip"])]


DEFAULT_RECEIVERS: dict[str, dict[str, Any]] = {
    "security": {"channel": "security-oncall"},
    "ml": {"channel": "ml-alerts"},
}

RAW_VALUE_KEYS = ("features", "feature_values", "sample_features", "inputs", "sample_inputs",
                  "embedding", "values", "raw", "top_values")


class NotifyConfig(_Section):
    slack: SlackConfig = SlackConfig()
    receivers: dict[str, ReceiverConfig] = Field(
        default_factory=lambda: {k: ReceiverConfig(**v) for k, v in DEFAULT_RECEIVERS.items()})
    route: RouteConfig = Field(default_factory=_default_route)
    inhibit: list[InhibitRule] = Field(default_factory=_default_inhibit)
    digest_threshold: int = Field(5, ge=1)  # more new alerts than this in one group → one digest
    post_feature_values: bool = False  # raw feature values stay out of Slack unless true
    raw_value_keys: list[str] = Field(default_factory=lambda: list(RAW_VALUE_KEYS))
    cli_config_path: str = "/etc/inferwatch/config.yaml"  # shown in the silence command to copy
    tick_s: float = Field(1.0, gt=0)  # how often grouping timers and the send queue are checked
    send_budget_s: float = Field(2.0, gt=0)  # wall time per loop spent sending, at most
    max_backoff_s: float = Field(300.0, gt=0)
    permanent_retry_s: float = Field(900.0, gt=0)  # re-try after invalid_auth/channel_not_found

    @model_validator(mode="before")
    @classmethod
    def _merge_default_receivers(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("receivers"), dict):
            merged = {k: dict(v) for k, v in DEFAULT_RECEIVERS.items()}
            for name, value in data["receivers"].items():
                if isinstance(value, dict) and name in merged:
                    # a transport given by the user replaces the default one
                    if any(k in value for k in ("webhook_url", "url", "webhook_url_file",
                                                 "url_file")):
                        merged[name].pop("channel", None)
                    merged[name].update(value)
                else:
                    merged[name] = value
            data = {**data, "receivers": merged}
        return data

    @model_validator(mode="after")
    def _known_receivers(self) -> NotifyConfig:
        def walk(route: RouteConfig, where: str) -> None:
            if route.receiver is not None and route.receiver not in self.receivers:
                raise ValueError(f"{where}.receiver: unknown receiver {route.receiver!r} "
                                 f"(known: {', '.join(sorted(self.receivers))})")
            for i, child in enumerate(route.routes):
                walk(child, f"{where}.routes.{i}")

        if self.route.receiver is None:
            raise ValueError("route.receiver: the root route needs a receiver")
        walk(self.route, "route")
        return self
