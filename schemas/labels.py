"""CICIDS2017 attack types: the canonical names, the label map of the model's attack-type head, and the mapping
from any source spelling or encoding of a label to its canonical type.

Copies of CICIDS2017 spell the same label differently: the dash in the web attacks survives as ``–`` (en dash),
as U+FFFD ``�`` or as ``ï¿½`` (UTF-8 of U+FFFD decoded as Latin-1 and re-encoded), and case and spaces vary.
Matching therefore compares a *key*: the label lower-cased with everything but ASCII letters and digits removed,
so ``'Web Attack ï¿½ Brute Force'``, ``'Web Attack – Brute Force'`` and ``'web attack brute force'`` all become
``'webattackbruteforce'``. A label whose key is not known maps to None: a bad label, quarantined by validation.

Some copies label by family only ('DoS', 'BruteForce'): the families are canonical types too, appended to the
label map, and :data:`FAMILY_OF` maps every type to its family (:data:`FAMILIES`).

The Spark side (``jobs.lib.prep.with_labels``) uses :data:`LABEL_KEY_PATTERN` and :data:`ALIASES` to build
the same mapping as a column expression; a test asserts both agree.
"""

from __future__ import annotations

import re

BENIGN = "BENIGN"

# The fixed order is the label map of the model's attack-type head (index = class id); BENIGN is class 0.
# Appending is the only compatible change: reordering would silently relabel the classes of shipped models.
ATTACK_TYPES: list[str] = [
    BENIGN,
    "DoS Hulk",
    "DoS GoldenEye",
    "DoS slowloris",
    "DoS Slowhttptest",
    "DDoS",
    "PortScan",
    "FTP-Patator",
    "SSH-Patator",
    "Bot",
    "Web Attack Brute Force",
    "Web Attack XSS",
    "Web Attack Sql Injection",
    "Infiltration",
    "Heartbleed",
    # Family names, for copies that label by family only (e.g. 'DoS', 'BruteForce', 'WebAttack').
    "DoS",
    "Brute Force",
    "Web Attack",
]
LABEL_MAP: dict[str, int] = {name: index for index, name in enumerate(ATTACK_TYPES)}

# Characters removed before matching (a Java-compatible regex too: Spark's regexp_replace uses it).
LABEL_KEY_PATTERN = "[^a-z0-9]+"


def label_key(raw: str) -> str:
    """Spelling- and encoding-insensitive form of a label: lower case, ASCII letters and digits only."""
    return re.sub(LABEL_KEY_PATTERN, "", raw.lower())


# key -> canonical type. Every canonical name matches itself (so does every spelling with the same key); the
# one extra spelling is a typo found in copies of the CIC data sets that the key alone does not unify.
ALIASES: dict[str, str] = {label_key(name): name for name in ATTACK_TYPES}
ALIASES[label_key("Infilteration")] = "Infiltration"
# 'BruteForce' and 'WebAttack' (grouped copies) already share the key of 'Brute Force' and 'Web Attack'.


# The attack families: the coarsest labels every copy of CICIDS2017 can be mapped to. Per-family metrics
# (jobs.evaluate's family_macro_f1) compare these, so a model trained on fine types and a file labelled by family
# meet on common ground. Heartbleed (11 flows in the whole data set) counts with DoS, as its own family would
# never have data.
FAMILIES: list[str] = [BENIGN, "DDoS", "DoS", "PortScan", "Web Attack", "Brute Force", "Bot", "Infiltration"]
FAMILY_OF: dict[str, str] = {
    **{name: name for name in FAMILIES},
    **{name: "DoS" for name in ("DoS Hulk", "DoS GoldenEye", "DoS slowloris", "DoS Slowhttptest", "Heartbleed")},
    **{name: "Brute Force" for name in ("FTP-Patator", "SSH-Patator")},
    **{name: "Web Attack" for name in ("Web Attack Brute Force", "Web Attack XSS", "Web Attack Sql Injection")},
}


def family_of(attack_type: str) -> str:
    """The family of a canonical attack type ('SSH-Patator' -> 'Brute Force'; a family maps to itself)."""
    return FAMILY_OF[attack_type]


def canonical_attack_type(raw: str | None) -> str | None:
    """The canonical attack type of a source label, or None when it is empty or unknown."""
    if raw is None:
        return None
    key = label_key(raw)
    return ALIASES.get(key) if key else None


def is_attack(attack_type: str) -> int:
    """Binary label of a canonical attack type: 0 benign, 1 attack."""
    return 0 if attack_type == BENIGN else 1
