"""Machine-readable marking of what the factory made (EU AI Act Art. 50(2)).

Every finished item's record carries the sha256 of its content, whether a trained model made
it (``ai_generated``) and its IPTC digital source type: ``trainedAlgorithmicMedia`` for text a
language model generated, ``algorithmicMedia`` for rows that rules made without one
(augmentation's EDA and character noise). Exports repeat the marking in their own form (a
column, file metadata, a dataset card line).
"""

from __future__ import annotations

from typing import Any

from factory.provenance.hashing import sha256_text

IPTC_DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/"
TRAINED_ALGORITHMIC_MEDIA = IPTC_DIGITAL_SOURCE_TYPE + "trainedAlgorithmicMedia"
ALGORITHMIC_MEDIA = IPTC_DIGITAL_SOURCE_TYPE + "algorithmicMedia"
RULES_GENERATOR = "rules"  # the provenance ``generator`` of rule-based augmentation


def mark(provenance: dict[str, Any], text: str) -> dict[str, Any]:
    """The record with its content hash and its marking."""
    trained = provenance.get("generator") != RULES_GENERATOR
    return {**provenance, "content_sha256": sha256_text(text), "ai_generated": trained,
            "digital_source_type": TRAINED_ALGORITHMIC_MEDIA if trained else ALGORITHMIC_MEDIA}


def marking(provenance: dict[str, Any] | None) -> dict[str, Any]:
    """The marking fields of a record, for exports (empty for an item that produced nothing)."""
    if not provenance or "digital_source_type" not in provenance:
        return {}
    return {"ai_generated": provenance["ai_generated"], "digital_source_type": provenance["digital_source_type"],
            "content_sha256": provenance["content_sha256"]}
