"""Receivers: the last hop of a notification. One job — send, and say whether a
failure is worth retrying (Alertmanager's notifier contract):

- HTTP 429 (with its Retry-After), 5xx and connection errors: retry later;
- a message Slack refuses for its content (``MESSAGE_ERRORS``: ``invalid_blocks``,
  ``msg_too_long``, …): skip that one message (``MessageRejectedError``) so it cannot
  block the ones behind it;
- any other refusal (a bad token, an unknown or archived channel, an error code not
  known here): stop this receiver (``DeliveryError`` with ``retryable=False``), keep
  its queue, say so in the log and the metrics; nothing is dropped on a guess.

The Slack clients are slack-sdk's ``WebClient`` and ``WebhookClient`` with their own
retries off (the outbox retries, with backoff, across restarts) and a logger that
never runs at DEBUG (slack-sdk logs webhook URLs there).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from slack_sdk import WebClient, WebhookClient
from slack_sdk.errors import SlackApiError, SlackClientError

from alerts.sinks import DeliveryError

log = logging.getLogger(__name__)

_sdk_log = logging.getLogger("inferwatch.slack_sdk")
_sdk_log.setLevel(logging.WARNING)

# Slack errors that no retry can fix: the receiver stops until its settings change.
RECEIVER_ERRORS = {
    "invalid_auth": "the bot token is invalid (alerts.slack.token)",
    "not_authed": "no bot token was sent (alerts.slack.token)",
    "account_inactive": "the bot token belongs to a deleted user or app",
    "token_revoked": "the bot token was revoked",
    "token_expired": "the bot token expired",
    "no_permission": "the token lacks permission",
    "missing_scope": "the Slack app lacks a scope (chat:write)",
    "channel_not_found": "the channel does not exist or the bot cannot see it",
    "not_in_channel": "the bot is not a member of the channel (invite it)",
    "is_archived": "the channel is archived",
    "channel_is_archived": "the channel is archived",
    "invalid_token": "the webhook URL is invalid or revoked",
    "no_service": "the webhook was removed",
    "no_active_hooks": "the webhook was disabled",
    "action_prohibited": "an admin restricted posting to the channel",
    "posting_to_general_channel_denied": "only admins may post to the channel",
    "restricted_action": "a workspace preference prevents the bot from posting",
    "restricted_action_read_only_channel": "the channel is read-only",
    "not_allowed_token_type": "the token is not a bot token (xoxb-)",
    "team_access_not_granted": "the token has no access to the workspace",
    "ekm_access_denied": "the workspace's administrators suspended posting (EKM)",
    "team_disabled": "the workspace is disabled",
}
# Slack errors about one message's content (chat.postMessage, chat.update, incoming
# webhooks): that message is skipped. Only these: an unknown error stops the receiver.
MESSAGE_ERRORS = {"invalid_blocks", "invalid_blocks_format", "invalid_attachments",
                  "msg_too_long", "msg_blocks_too_long", "no_text", "too_many_attachments",
                  "invalid_payload", "invalid_metadata_format", "invalid_metadata_schema",
                  "metadata_too_large", "message_not_found", "cant_update_message",
                  "edit_window_closed"}
RETRYABLE_ERRORS = {"ratelimited", "rate_limited", "internal_error", "fatal_error",
                    "service_unavailable", "request_timeout"}


class MessageRejectedError(DeliveryError):
    """Slack refused this one message; retrying it cannot help."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, retryable=False, reason=reason)


@dataclass
class Item:
    """One queued notification as a receiver sees it."""

    action: str  # post | reply | update
    reason: str  # first | new | repeat | resolved | ack
    message: dict[str, Any]  # Slack: text + attachments/blocks
    alerts: list[dict[str, Any]] = field(default_factory=list)
    group: dict[str, str] = field(default_factory=dict)
    channel: str | None = None  # reply/update: where the parent is
    ts: str | None = None  # reply: thread_ts; update: the message's ts


class Receiver(Protocol):
    name: str
    threads: ClassVar[bool]  # can reply in threads and edit messages

    def send(self, item: Item) -> tuple[str | None, str | None]:
        """Deliver; return (channel id, message ts) when the transport has them."""


def _retry_after(headers: Any) -> float | None:
    try:
        value = (headers or {}).get("Retry-After") or (headers or {}).get("retry-after")
        if isinstance(value, list):
            value = value[0]
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


def _classify(status: int, error: str, headers: Any, what: str) -> DeliveryError:
    if status == 429 or error in ("ratelimited", "rate_limited"):
        return DeliveryError(f"{what}: rate limited", retryable=True,
                             retry_after_s=_retry_after(headers), reason="rate_limited")
    if status >= 500 or error in RETRYABLE_ERRORS:
        return DeliveryError(f"{what}: HTTP {status} {error}".strip(), retryable=True,
                             reason="server_error")
    if error in MESSAGE_ERRORS or status == 413:  # 413: this message is too large
        return MessageRejectedError(f"{what}: HTTP {status} {error}",
                                    reason=error or f"http_{status}")
    why = RECEIVER_ERRORS.get(error) or (f"Slack's error {error!r}, not known to inferwatch"
                                         if error else f"HTTP {status}")
    return DeliveryError(f"{what}: {error or status} — {why}", retryable=False,
                         reason=error or f"http_{status}")


class SlackReceiver:
    """A channel, through the Web API with a bot token: threads and edits work."""

    threads: ClassVar[bool] = True

    def __init__(self, name: str, channel: str, token: str, *,
                 base_url: str = "https://slack.com/api/", timeout_s: float = 10.0) -> None:
        self.name = name
        self.channel = channel
        self.client = WebClient(token=token, base_url=base_url, timeout=timeout_s,  # type: ignore[arg-type]
                                retry_handlers=[], logger=_sdk_log)
        self.identity: str | None = None

    def __repr__(self) -> str:  # never the token
        return f"SlackReceiver({self.name!r}, channel={self.channel!r})"

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except SlackApiError as exc:
            resp = exc.response
            data = resp.data if isinstance(resp.data, dict) else {}
            raise _classify(resp.status_code, str(data.get("error") or ""), resp.headers,
                            f"Slack {what}") from None
        except SlackClientError as exc:
            raise DeliveryError(f"Slack {what}: {exc}", retryable=False,
                                reason="client_error") from None
        except OSError as exc:  # URLError, timeouts, refused connections
            raise DeliveryError(f"Slack {what}: {exc}", retryable=True,
                                reason="connection_error") from None

    def check(self) -> None:
        """``auth.test`` once: a bad token shows up at once, by name."""
        if self.identity is None:
            resp = self._call("auth.test", self.client.auth_test)
            self.identity = f"{resp.get('user')} in {resp.get('team')}"
            log.info("Slack receiver %s: authenticated as %s, posting to %s", self.name,
                     self.identity, self.channel)

    def send(self, item: Item) -> tuple[str | None, str | None]:
        self.check()
        msg = dict(item.message)
        if item.action == "update":
            self._call("chat.update", self.client.chat_update, channel=item.channel,
                       ts=item.ts, **msg)
            return item.channel, item.ts
        extra: dict[str, Any] = {}
        if item.action == "reply" and item.ts:
            extra["thread_ts"] = item.ts
        resp = self._call("chat.postMessage", self.client.chat_postMessage,
                          channel=item.channel or self.channel, unfurl_links=False,
                          unfurl_media=False, link_names=False, **msg, **extra)
        return resp.get("channel"), resp.get("ts")


class SlackWebhookReceiver:
    """A Slack incoming webhook: simplest to set up, but no threads and no edits —
    a repeat or a resolution is a new message in the channel."""

    threads: ClassVar[bool] = False

    def __init__(self, name: str, url: str, *, timeout_s: float = 10.0) -> None:
        self.name = name
        self.client = WebhookClient(url=url, timeout=timeout_s,  # type: ignore[arg-type]
                                    retry_handlers=[], logger=_sdk_log)

    def __repr__(self) -> str:  # never the URL (it is the secret)
        return f"SlackWebhookReceiver({self.name!r})"

    def send(self, item: Item) -> tuple[str | None, str | None]:
        body = {k: v for k, v in item.message.items() if k in ("text", "blocks", "attachments")}
        _post(self.client, body, "Slack webhook")
        return None, None


class JsonWebhookReceiver:
    """Any HTTP endpoint: one JSON POST per notification with the alert records
    (``{"receiver", "reason", "action", "group", "text", "alerts": [...]}``)."""

    threads: ClassVar[bool] = False

    def __init__(self, name: str, url: str, *, timeout_s: float = 10.0) -> None:
        self.name = name
        self.client = WebhookClient(url=url, timeout=timeout_s,  # type: ignore[arg-type]
                                    retry_handlers=[], logger=_sdk_log)

    def __repr__(self) -> str:
        return f"JsonWebhookReceiver({self.name!r})"

    def send(self, item: Item) -> tuple[str | None, str | None]:
        body = {"version": "1", "receiver": self.name, "reason": item.reason,
                "action": item.action, "group": item.group,
                "text": item.message.get("text", ""), "alerts": item.alerts}
        _post(self.client, body, "webhook")
        return None, None


def _post(client: WebhookClient, body: dict[str, Any], what: str) -> None:
    try:
        resp = client.send_dict(body)
    except SlackClientError as exc:
        raise DeliveryError(f"{what}: {exc}", retryable=False, reason="client_error") from None
    except OSError as exc:
        raise DeliveryError(f"{what}: {exc}", retryable=True, reason="connection_error") from None
    if 200 <= resp.status_code < 300:
        return
    error = (resp.body or "").strip()[:80] if resp.status_code < 500 else ""
    raise _classify(resp.status_code, error if error.isidentifier() else "", resp.headers, what)
