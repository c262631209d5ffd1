"""The severity ladder (one mapping table) and the MITRE ATLAS technique names.

Every place that needs to know what a severity means — its rank for inhibition
and ordering, its Slack colour and emoji, whether it mentions a user group unless
a receiver's ``mention_severities`` says otherwise —
reads it from ``LADDER``; nothing else hard-codes a severity.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Severity:
    rank: int
    colour: str
    emoji: str
    mention: bool  # pings the receiver's user group by default (mention_severities)


LADDER: dict[str, Severity] = {
    "critical": Severity(rank=3, colour="#D0021B", emoji=":red_circle:", mention=True),
    "warning": Severity(rank=2, colour="#F5A623", emoji=":large_orange_circle:", mention=False),
    "info": Severity(rank=1, colour="#439FE0", emoji=":large_blue_circle:", mention=False),
}
UNKNOWN = Severity(rank=0, colour="#9B9B9B", emoji=":white_circle:", mention=False)
RESOLVED_COLOUR = "#2EB67D"
RESOLVED_EMOJI = ":white_check_mark:"


def severity(name: str) -> Severity:
    """The ladder entry of ``name`` (an unknown severity ranks lowest, grey)."""
    return LADDER.get(name, UNKNOWN)


# MITRE ATLAS techniques our detectors cite (https://atlas.mitre.org/techniques/).
ATLAS: dict[str, str] = {
    "AML.T0015": "Evade AI Model",
    "AML.T0024": "Exfiltration via AI Inference API",
    "AML.T0024.000": "Infer Training Data Membership",
    "AML.T0024.001": "Invert AI Model",
    "AML.T0024.002": "Extract AI Model",
    "AML.T0029": "Denial of AI Service",
    "AML.T0034": "Cost Harvesting",
    "AML.T0040": "AI Model Inference API Access",
    "AML.T0042": "Verify Attack",
    "AML.T0043": "Craft Adversarial Data",
    "AML.T0043.000": "White-Box Optimization",
    "AML.T0043.001": "Black-Box Optimization",
    "AML.T0043.002": "Black-Box Transfer",
    "AML.T0043.003": "Manual Modification",
}


def atlas_name(technique: str) -> str:
    """``AML.T0024.002`` → ``Extract AI Model`` (the parent's name for an unknown
    sub-technique, the id itself when nothing is known)."""
    if technique in ATLAS:
        return ATLAS[technique]
    parent = technique.rsplit(".", 1)[0]
    return ATLAS.get(parent, technique) if parent.count(".") >= 1 else technique
