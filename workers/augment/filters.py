"""Quality filters over every output of an augmentation job, run once in its finalize step.

The stages run in order, each over the outputs that passed the stages before it,
and each reports how many it looked at and how many it refused:

1. ``length``: characters outside ``[min_chars, max_chars]`` (empty outputs too).
2. ``charset``: control characters, U+FFFD, private-use or unassigned code points, no letter.
3. ``prompt_leftover``: the answer still talks about the task ("Sure! Here's a rewrite").
4. ``exact_duplicate``: equal, ignoring case and spacing, to a source row or to an earlier output.
5. ``similarity_band``: cosine to its own source row above ``max`` (a copy) or below ``min`` (drift).
6. ``label_consistency``: a nearest-centroid classifier over the source rows' embeddings
   predicts another label.
7. ``near_duplicate``: cosine at or above the threshold to another source row, or to an
   earlier output that was kept (greedy, in submission order, so the first of a group stays).

Embeddings are computed once, for the source rows and the outputs that reach stage 5.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from factory.augmentation.schemas import FilterSpec
from workers.augment.llm_output import prompt_leftover

Encode = Callable[[Sequence[str]], np.ndarray]
_BLOCK = 512


@dataclass(frozen=True)
class Candidate:
    item_id: str
    method: str
    label: str
    text: str
    source_row_id: str | None  # None for rows generated per label


@dataclass(frozen=True)
class Source:
    row_id: str
    label: str
    text: str


@dataclass
class Verdict:
    accepted: bool = True
    reason: str | None = None
    similarity: float | None = None  # cosine to its own source row, when it has one
    details: dict[str, Any] = field(default_factory=dict)

    def reject(self, reason: str, **details: Any) -> None:
        self.accepted = False
        self.reason = reason
        self.details.update(details)


@dataclass
class StageReport:
    name: str
    params: dict[str, Any]
    evaluated: int = 0
    rejected: int = 0
    detail: Counter[str] = field(default_factory=Counter)

    def not_applicable(self, n: int = 1) -> None:
        """Rows the stage passes without judging (no own source row; a single label)."""
        self.evaluated -= n
        self.detail["not_applicable"] += n

    def as_dict(self) -> dict[str, Any]:
        rate = None if self.evaluated == 0 else round((self.evaluated - self.rejected) / self.evaluated, 4)
        return {"name": self.name, "params": self.params, "evaluated": self.evaluated, "rejected": self.rejected,
                "acceptance_rate": rate, "detail": dict(sorted(self.detail.items()))}


@dataclass
class FilterResult:
    verdicts: list[Verdict]
    stages: list[StageReport]
    source_embeddings: np.ndarray
    # Embeddings of the outputs that reached the embedding stages, by candidate index.
    embeddings: dict[int, np.ndarray]

    def accepted_indices(self) -> list[int]:
        return [i for i, v in enumerate(self.verdicts) if v.accepted]


def normalise(text: str) -> str:
    """What "exactly the same" means here: NFKC, case-folded, single spaces."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def charset_problem(text: str) -> str | None:
    for ch in text:
        if ch == "\ufffd":
            return "replacement_character"
        category = unicodedata.category(ch)
        if category == "Cc" and ch not in "\n\t":
            return "control_character"
        if category in ("Co", "Cn", "Cs"):
            return "private_or_unassigned"
    if not any(ch.isalpha() for ch in text):
        return "no_letters"
    return None


class FilterPipeline:
    def __init__(self, spec: FilterSpec, encode: Encode) -> None:
        self.spec = spec
        self.encode = encode

    def run(self, candidates: Sequence[Candidate], sources: Sequence[Source]) -> FilterResult:
        verdicts = [Verdict() for _ in candidates]
        stages: list[StageReport] = []
        alive = list(range(len(candidates)))

        def stage(name: str, params: dict[str, Any], check: Callable[[list[int], StageReport], None]) -> None:
            nonlocal alive
            report = StageReport(name, params, evaluated=len(alive))  # stages subtract what they skip
            check(alive, report)
            report.rejected = sum(not verdicts[i].accepted for i in alive)
            stages.append(report)
            alive = [i for i in alive if verdicts[i].accepted]

        spec = self.spec
        stage("length", {"min_chars": spec.min_chars, "max_chars": spec.max_chars},
              lambda idx, rep: self._length(candidates, verdicts, idx, rep))
        if spec.charset:
            stage("charset", {}, lambda idx, rep: self._charset(candidates, verdicts, idx, rep))
        if spec.prompt_leftovers:
            stage("prompt_leftover", {}, lambda idx, rep: self._leftovers(candidates, verdicts, idx, rep))
        if spec.exact_duplicates:
            stage("exact_duplicate", {}, lambda idx, rep: self._exact(candidates, sources, verdicts, idx, rep))

        source_emb = self.encode([s.text for s in sources])
        out_emb = self.encode([candidates[i].text for i in alive])
        embeddings = {i: out_emb[n] for n, i in enumerate(alive)}
        row_index = {s.row_id: n for n, s in enumerate(sources)}
        for n, i in enumerate(alive):
            own = candidates[i].source_row_id
            if own is not None and own in row_index:
                verdicts[i].similarity = round(float(out_emb[n] @ source_emb[row_index[own]]), 4)

        if spec.similarity_band is not None:
            band = spec.similarity_band
            stage("similarity_band", {"min": band.min, "max": band.max},
                  lambda idx, rep: self._band(verdicts, idx, rep, band.min, band.max))
        if spec.label_check == "centroid":
            stage("label_consistency", {"classifier": "nearest-centroid"},
                  lambda idx, rep: self._labels(candidates, sources, source_emb, embeddings, verdicts, idx, rep))
        if spec.near_duplicate is not None:
            threshold = spec.near_duplicate
            stage("near_duplicate", {"threshold": threshold},
                  lambda idx, rep: self._near(candidates, row_index, source_emb, embeddings, verdicts, idx, rep,
                                              threshold))
        return FilterResult(verdicts=verdicts, stages=stages, source_embeddings=source_emb, embeddings=embeddings)

    # --- the stages ----------------------------------------------------------------
    def _length(self, cands: Sequence[Candidate], verdicts: list[Verdict], idx: list[int],
                rep: StageReport) -> None:
        for i in idx:
            n = len(cands[i].text.strip())
            if n < self.spec.min_chars:
                verdicts[i].reject("length", chars=n)
                rep.detail["too_short"] += 1
            elif n > self.spec.max_chars:
                verdicts[i].reject("length", chars=n)
                rep.detail["too_long"] += 1

    @staticmethod
    def _charset(cands: Sequence[Candidate], verdicts: list[Verdict], idx: list[int], rep: StageReport) -> None:
        for i in idx:
            problem = charset_problem(cands[i].text)
            if problem:
                verdicts[i].reject("charset", problem=problem)
                rep.detail[problem] += 1

    @staticmethod
    def _leftovers(cands: Sequence[Candidate], verdicts: list[Verdict], idx: list[int],
                   rep: StageReport) -> None:
        for i in idx:
            if prompt_leftover(cands[i].text):
                verdicts[i].reject("prompt_leftover")
                rep.detail[cands[i].method] += 1

    @staticmethod
    def _exact(cands: Sequence[Candidate], sources: Sequence[Source], verdicts: list[Verdict], idx: list[int],
               rep: StageReport) -> None:
        source_texts = {normalise(s.text): s.row_id for s in sources}
        kept: dict[str, str] = {}
        for i in idx:
            key = normalise(cands[i].text)
            if key in source_texts:
                verdicts[i].reject("exact_duplicate", duplicate_of=source_texts[key])
                rep.detail["of_source"] += 1
            elif key in kept:
                verdicts[i].reject("exact_duplicate", duplicate_of=kept[key])
                rep.detail["of_output"] += 1
            else:
                kept[key] = cands[i].item_id

    @staticmethod
    def _band(verdicts: list[Verdict], idx: list[int], rep: StageReport, low: float, high: float) -> None:
        for i in idx:
            sim = verdicts[i].similarity
            if sim is None:
                rep.not_applicable()
            elif sim > high:
                verdicts[i].reject("similarity_band", side="too_close")
                rep.detail["too_close"] += 1
            elif sim < low:
                verdicts[i].reject("similarity_band", side="too_far")
                rep.detail["too_far"] += 1

    @staticmethod
    def _labels(cands: Sequence[Candidate], sources: Sequence[Source], source_emb: np.ndarray,
                embeddings: dict[int, np.ndarray], verdicts: list[Verdict], idx: list[int],
                rep: StageReport) -> None:
        classifier = CentroidClassifier.fit(source_emb, [s.label for s in sources])
        if classifier is None:
            rep.not_applicable(len(idx))
            return
        rep.params["source_accuracy_leave_one_out"] = classifier.leave_one_out_accuracy
        if not idx:
            return
        predicted = classifier.predict(np.stack([embeddings[i] for i in idx]))
        for i, label in zip(idx, predicted, strict=True):
            if label != cands[i].label:
                verdicts[i].reject("label_consistency", predicted=label)
                rep.detail[f"{cands[i].label} -> {label}"] += 1

    @staticmethod
    def _near(cands: Sequence[Candidate], row_index: dict[str, int], source_emb: np.ndarray,
              embeddings: dict[int, np.ndarray], verdicts: list[Verdict], idx: list[int], rep: StageReport,
              threshold: float) -> None:
        if not idx:
            return
        emb = np.stack([embeddings[i] for i in idx])
        row_ids = list(row_index)
        # Against source rows other than the output's own (that one is the similarity band's job).
        for start in range(0, len(idx), _BLOCK):
            sims = emb[start:start + _BLOCK] @ source_emb.T if len(source_emb) else None
            if sims is None:
                break
            for n, i in enumerate(idx[start:start + _BLOCK]):
                own = row_index.get(cands[i].source_row_id or "")
                if own is not None:
                    sims[n, own] = -1.0
                top = int(np.argmax(sims[n]))
                if sims[n, top] >= threshold:
                    verdicts[i].reject("near_duplicate", duplicate_of=row_ids[top],
                                       cosine=round(float(sims[n, top]), 4))
                    rep.detail["of_source"] += 1
        # Against earlier kept outputs, greedily, in blocks: the first of a near-identical group stays.
        order = [n for n, i in enumerate(idx) if verdicts[i].accepted]
        kept: list[int] = []
        for start in range(0, len(order), _BLOCK):
            block = order[start:start + _BLOCK]
            vecs = emb[block]
            prior = vecs @ emb[kept].T if kept else np.zeros((len(block), 0), dtype=np.float32)
            inner = vecs @ vecs.T
            kept_here: list[int] = []
            for b, n in enumerate(block):
                best, best_n = -1.0, -1
                if prior.shape[1]:
                    j = int(np.argmax(prior[b]))
                    best, best_n = float(prior[b, j]), kept[j]
                if kept_here:
                    local = inner[b, kept_here]
                    j = int(np.argmax(local))
                    if float(local[j]) > best:
                        best, best_n = float(local[j]), block[kept_here[j]]
                if best >= threshold:
                    verdicts[idx[n]].reject("near_duplicate", duplicate_of=cands[idx[best_n]].item_id,
                                            cosine=round(best, 4))
                    rep.detail["of_output"] += 1
                else:
                    kept_here.append(b)
            kept += [block[b] for b in kept_here]


@dataclass
class CentroidClassifier:
    """Predicts the label whose source rows' mean embedding is closest (cosine)."""

    labels: list[str]
    centroids: np.ndarray  # one L2-normalised row per label
    leave_one_out_accuracy: float

    @classmethod
    def fit(cls, emb: np.ndarray, labels: Sequence[str]) -> CentroidClassifier | None:
        names = sorted(set(labels))
        if len(names) < 2:
            return None
        col = {name: n for n, name in enumerate(names)}
        y = np.array([col[label] for label in labels])
        sums = np.zeros((len(names), emb.shape[1]), dtype=np.float64)
        np.add.at(sums, y, emb)
        counts = np.bincount(y, minlength=len(names)).astype(np.float64)
        centroids = sums / np.linalg.norm(sums, axis=1, keepdims=True)
        # Leave-one-out: each source row against centroids that exclude it (an honest accuracy).
        scores = emb @ centroids.T
        own = sums[y] - emb
        own_norm = np.linalg.norm(own, axis=1)
        loo = np.where(counts[y] > 1, np.einsum("ij,ij->i", emb, own) / np.maximum(own_norm, 1e-12), -np.inf)
        scores[np.arange(len(y)), y] = loo
        accuracy = float(np.mean(np.argmax(scores, axis=1) == y))
        return cls(labels=names, centroids=centroids.astype(np.float32), leave_one_out_accuracy=round(accuracy, 4))

    def predict(self, emb: np.ndarray) -> list[str]:
        return [self.labels[j] for j in np.argmax(emb @ self.centroids.T, axis=1)]
