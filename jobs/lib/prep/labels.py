"""Labels: each raw label to its canonical attack type (and family) and the binary label."""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType

from schemas.flows import (
    LABEL_COLUMN,
)
from schemas.labels import ALIASES, ATTACK_TYPES, BENIGN, LABEL_KEY_PATTERN


def _label_key(label: Column) -> Column:
    return F.regexp_replace(F.lower(label), LABEL_KEY_PATTERN, "")


def attack_type_of(label: Column) -> Column:
    """Canonical attack type of a raw label column (null when unknown); the Spark twin of
    :func:`schemas.labels.canonical_attack_type`."""
    keys, types = zip(*sorted(ALIASES.items()), strict=True)
    mapping = F.map_from_arrays(_names(keys), _names(types))
    return F.try_element_at(mapping, _label_key(label))


def _names(items: Sequence[str]) -> Column:
    """An array<string> literal as one small expression (constant-folded), not one node per element."""
    return F.split(F.lit("\x1f".join(items)), "\x1f")


def with_labels(df: DataFrame) -> DataFrame:
    """Adds ``attack_type`` (canonical, null for an unknown label) and ``is_attack`` (0 benign, 1 attack)."""
    attack_type = attack_type_of(F.col(LABEL_COLUMN))
    return df.withColumns({
        "attack_type": attack_type,
        "is_attack": F.when(attack_type == BENIGN, 0).when(attack_type.isNotNull(), 1).cast(IntegerType()),
    })


def label_map() -> list[str]:
    """The attack-type head's classes, index = class id (schemas.labels.ATTACK_TYPES)."""
    return list(ATTACK_TYPES)
