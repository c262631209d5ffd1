"""Slack messages (Block Kit inside a coloured attachment), built from contract
alert records.

Every string that can come from a client or a producer — client ids, model and
feature names, request ids, summaries, evidence — goes through ``escape`` before
it reaches mrkdwn, so ``<!channel>`` or ``<https://evil|click>`` in a client id
is shown, never obeyed. Messages stay inside Slack's limits (section text 3000
characters, 10 fields of 2000, 50 blocks) and say when something was cut.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from alerts.severity import RESOLVED_COLOUR, RESOLVED_EMOJI, atlas_name, severity

SECTION_MAX = 3000
FIELD_MAX = 2000
VALUE_MAX = 300  # one evidence value
FIELDS_MAX = 10
LIST_MAX = 25  # subjects listed in a digest or a batched reply
TRUNCATED = " … (truncated)"
ATLAS_URL = "https://atlas.mitre.org/techniques/"
_ATLAS_ID = re.compile(r"^AML\.T[0-9]{4}(\.[0-9]{3})?$")


def escape(text: object) -> str:
    """Escape Slack's three control characters (https://api.slack.com/reference/surfaces/formatting#escaping)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int, note: str = TRUNCATED) -> str:
    """``text`` cut to ``limit`` characters, ending with ``note`` when cut (never
    inside an ``&amp;``-style entity)."""
    if len(text) <= limit:
        return text
    cut = text[: max(0, limit - len(note))]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + note


def _code(text: str) -> str:
    return "`" + escape(text).replace("`", "'") + "`"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(", ", ": "), default=str)


def withhold_raw(evidence: Any, keys: Iterable[str]) -> Any:
    """Evidence with raw feature values (the keys named in ``keys``) withheld."""
    keys = set(keys)
    if isinstance(evidence, Mapping):
        return {k: ("(withheld: raw values; set alerts.post_feature_values to show)"
                    if k in keys else withhold_raw(v, keys)) for k, v in evidence.items()}
    if isinstance(evidence, list):
        return [withhold_raw(v, keys) for v in evidence]
    return evidence


def subject_text(subject: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(subject.items())) or "the model"


class Renderer:
    """Builds the messages of one receiver."""

    def __init__(self, *, mention: str | None = None, mention_severities: Sequence[str] = (),
                 post_feature_values: bool = False, raw_value_keys: Sequence[str] = (),
                 cli_config_path: str = "config.yaml") -> None:
        self.mention = mention
        self.mention_severities = set(mention_severities)
        self.post_feature_values = post_feature_values
        self.raw_value_keys = tuple(raw_value_keys)
        self.cli_config_path = cli_config_path

    # -- pieces ---------------------------------------------------------------------
    def silence_command(self, matchers: Sequence[tuple[str, str]], why: str = "…") -> str:
        args = " ".join(f"-m {shlex.quote(f'{k}={v}')}" for k, v in matchers)
        return (f"inferwatch alerts silence --config {shlex.quote(self.cli_config_path)} "
                f"{args} -d 4h --why {shlex.quote(why)}")

    def _evidence(self, evidence: Mapping[str, Any]) -> tuple[list[str], int]:
        if not self.post_feature_values:
            evidence = withhold_raw(evidence, self.raw_value_keys)
        items = sorted(evidence.items())
        fields = [clip(f"*{escape(k)}*\n{escape(clip(_value(v), VALUE_MAX))}", FIELD_MAX)
                  for k, v in items[:FIELDS_MAX]]
        return fields, max(0, len(items) - FIELDS_MAX)

    def _atlas(self, techniques: Sequence[str]) -> str:
        return ", ".join(f"<{ATLAS_URL}{t}|{t}> {escape(atlas_name(t))}"
                         if _ATLAS_ID.match(t) else escape(t) for t in techniques)

    def _mention(self, records: Iterable[Mapping[str, Any]]) -> str:
        """The receiver's mention, when any of ``records`` fires at a severity of its
        ``mention_severities``."""
        if self.mention and any(r.get("status") == "firing"
                                and r.get("severity") in self.mention_severities
                                for r in records):
            return self.mention + " "
        return ""

    # -- messages -------------------------------------------------------------------
    def alert(self, rec: Mapping[str, Any], *, ack: Mapping[str, Any] | None = None) -> dict:
        """The one message of an incident; re-rendered in place when it resolves."""
        resolved = rec["status"] == "resolved"
        sev = severity(rec["severity"])
        emoji = RESOLVED_EMOJI if resolved else sev.emoji
        head = f"Resolved: {rec['summary']}" if resolved else rec["summary"]
        title = clip(f"{emoji} *{escape(head)}*", SECTION_MAX)
        facts = [
            f"*Severity*\n{escape(rec['severity'])}",
            f"*Kind*\n{escape(rec['kind'])}",
            f"*Model*\n{escape(rec['model'])}@{escape(rec['model_version'])}",
            f"*Subject*\n{escape(subject_text(rec['subject']))}",
            f"*Detections*\n{int(rec['count'])}",
            f"*Seen*\n{escape(rec['first_seen'])} → {escape(rec['last_seen'])}",
            f"*Detector*\n{escape(rec['detector'])}",
        ]
        if rec.get("atlas"):
            facts.append(f"*MITRE ATLAS*\n{self._atlas(rec['atlas'])}")
        blocks: list[dict] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": title}},
            {"type": "section", "fields": [_mrkdwn(clip(f, FIELD_MAX)) for f in facts]},
        ]
        fields, more = self._evidence(rec.get("evidence") or {})
        if fields:
            blocks.append({"type": "section", "fields": [_mrkdwn(f) for f in fields]})
        notes = []
        if more:
            notes.append(f"{more} more evidence field(s) not shown: "
                         f"`inferwatch alerts list` has the full record")
        if ack:
            notes.append(f":eyes: Acknowledged by {escape(ack['acked_by'])}: "
                         f"{escape(ack['comment'])}")
        if not resolved:
            cmd = self.silence_command([("fingerprint", rec["fingerprint"])])
            notes.append(f"Silence: {_code(cmd)}")
        notes.append(f"fingerprint `{escape(rec['fingerprint'])}` · alert `{escape(rec['id'])}`")
        blocks.append({"type": "context",
                       "elements": [_mrkdwn(clip(n, SECTION_MAX)) for n in notes[:10]]})
        text = clip(f"{self._mention([rec])}[{escape(rec['severity']).upper()}] "
                    f"{'RESOLVED ' if resolved else ''}{escape(rec['summary'])}", SECTION_MAX)
        colour = RESOLVED_COLOUR if resolved else sev.colour
        return {"text": text, "attachments": [{"color": colour, "blocks": blocks}]}

    def digest(self, group: Mapping[str, str], records: Sequence[Mapping[str, Any]]) -> dict:
        """One message for many alerts of one group (an alert storm)."""
        firing = [r for r in records if r["status"] == "firing"]
        resolved = len(records) - len(firing)
        # the worst of what still fires (a critical that resolved no longer colours it)
        top = max((severity(r["severity"]).rank, r["severity"]) for r in firing or records)[1]
        sev = severity(top)
        what = " ".join(f"{escape(k)} {escape(v)}" for k, v in group.items() if v)
        if firing:
            head = (f"{sev.emoji} *{len(records)} alerts at once: {what}*"
                    f" — {len(firing)} firing, {resolved} resolved")
        else:
            head = f"{RESOLVED_EMOJI} *Resolved: all {len(records)} alerts of {what}*"
        example = records[0]["summary"]
        lines = [f"• {escape(subject_text(r['subject']))} — {escape(r['severity'])}, "
                 f"{int(r['count'])} detection(s)"
                 f"{' (resolved)' if r['status'] == 'resolved' else ''}"
                 for r in records[:LIST_MAX]]
        if len(records) > LIST_MAX:
            lines.append(f"… and {len(records) - LIST_MAX} more: "
                         "`inferwatch alerts list --status firing`")
        blocks: list[dict] = [
            {"type": "section", "text": _mrkdwn(clip(head, SECTION_MAX))},
            {"type": "section", "text": _mrkdwn(clip(f"e.g. {escape(example)}", SECTION_MAX))},
            {"type": "section", "text": _mrkdwn(clip("\n".join(lines), SECTION_MAX))},
        ]
        techniques = sorted({t for r in records for t in r.get("atlas") or ()})
        notes = []
        if techniques:
            notes.append(f"MITRE ATLAS: {self._atlas(techniques)}")
        if firing and all(_plain(v) for v in group.values()):
            cmd = self.silence_command(sorted(group.items()))
            notes.append(f"Silence the group: {_code(cmd)}")
        if notes:
            blocks.append({"type": "context",
                           "elements": [_mrkdwn(clip(n, SECTION_MAX)) for n in notes]})
        text = clip(f"{self._mention(firing)}[{escape(top).upper()}] "
                    f"{len(records)} alerts: {what}", SECTION_MAX)
        colour = sev.colour if firing else RESOLVED_COLOUR
        return {"text": text, "attachments": [{"color": colour, "blocks": blocks}]}

    def reply(self, reason: str, records: Sequence[Mapping[str, Any]],
              ack: Mapping[str, Any] | None = None) -> dict:
        """A thread reply: ``repeat`` (still firing), ``resolved``, ``new`` (more
        alerts joined a digest) or ``ack``."""
        if reason == "ack" and ack is not None:
            text = (f":eyes: Acknowledged by {escape(ack['acked_by'])}: "
                    f"{escape(ack['comment'])} (no more reminders)")
            return _plain_message(text)
        if len(records) == 1 and reason != "new":
            r = records[0]
            if reason == "escalated":
                sev = severity(r["severity"])
                text = (f"{self._mention([r])}{sev.emoji} Escalated to *{escape(r['severity'])}*: "
                        f"{escape(r['summary'])}")
            elif reason == "resolved":
                text = (f"{RESOLVED_EMOJI} Resolved at {escape(r['last_seen'])} after "
                        f"{int(r['count'])} detection(s).")
            else:
                text = (f"Still firing: {int(r['count'])} detection(s), last at "
                        f"{escape(r['last_seen'])}. {escape(r['summary'])}")
            return _plain_message(text)
        intro = {"resolved": f"{RESOLVED_EMOJI} {len(records)} resolved:",
                 "repeat": f"{len(records)} still firing:",
                 "new": f"{len(records)} more joined:"}.get(reason, f"{len(records)}:")
        lines = [f"• {escape(subject_text(r['subject']))} — {int(r['count'])} detection(s), "
                 f"last at {escape(r['last_seen'])}" for r in records[:LIST_MAX]]
        if len(records) > LIST_MAX:
            lines.append(f"… and {len(records) - LIST_MAX} more")
        return _plain_message(intro + "\n" + "\n".join(lines))


def _mrkdwn(text: str) -> dict:
    return {"type": "mrkdwn", "text": text}


def _plain_message(text: str) -> dict:
    text = clip(text, SECTION_MAX)
    return {"text": text, "blocks": [{"type": "section", "text": _mrkdwn(text)}]}


def _plain(value: str) -> bool:
    """Safe to offer in a command to copy (no newline, no backtick)."""
    return "`" not in value and "\n" not in value and "\r" not in value
