"""The rule-based methods, LLM output cleanup, diversity metrics and dataset parsing: pure logic."""

from __future__ import annotations

import io
import itertools
import random
from collections import Counter

import numpy as np
import pytest

from factory.augmentation.sources import read_records, select_rows
from factory.errors import InvalidInput
from factory.storage import keys
from workers.augment import eda, llm_output, noise
from workers.augment.filters import CentroidClassifier, charset_problem, normalise
from workers.augment.metrics import distinct_n, mean_pairwise_cosine
from workers.augment.synonyms import default_synonyms
from workers.kinds.augmentation import apply_rule

TEXT = "I returned the shoes two weeks ago and still haven't got my money back."


def _words(text: str) -> list[str]:
    return [t for t in eda.tokenize(text)[0] if t[0].isalnum()]


def test_tokenize_then_detokenize_gives_the_text_back() -> None:
    for text in (TEXT, "The page says 'in transit' (since Monday), help!", "  spaced   out  ", "Hi"):
        assert eda.detokenize(*eda.tokenize(text)) == " ".join(text.split()) or \
            eda.detokenize(*eda.tokenize(text)) == text.strip()


def test_each_eda_operation_does_what_it_says_and_is_deterministic() -> None:
    lexicon = default_synonyms()
    words = _words(TEXT)
    for seed in range(20):
        swapped = eda.augment(TEXT, operation="swap", alpha=0.1, seed=seed)
        assert Counter(w.lower() for w in _words(swapped)) == Counter(w.lower() for w in words)
        assert swapped != TEXT
        deleted = _words(eda.augment(TEXT, operation="delete", alpha=0.1, seed=seed))
        assert 1 <= len(words) - len(deleted) <= len(words) - 1
        assert all(w in [x.lower() for x in words] for w in (d.lower() for d in deleted))
        inserted = _words(eda.augment(TEXT, operation="insert", alpha=0.1, seed=seed))
        assert len(inserted) == len(words) + 1  # alpha 0.1 of 14 words: one insertion
        extra = Counter(w.lower() for w in inserted) - Counter(w.lower() for w in words)
        (new_word,) = extra
        assert any(new_word in lexicon.synonyms(w) for w in words)
        replaced = _words(eda.augment(TEXT, operation="synonym", alpha=0.1, seed=seed))
        changed = [(a, b) for a, b in zip(words, replaced, strict=True) if a.lower() != b.lower()]
        assert len(changed) == 1 and changed[0][1].lower() in lexicon.synonyms(changed[0][0])
    runs = {eda.augment(TEXT, operation=op, alpha=0.2, seed=7) for op in eda.OPERATIONS for _ in range(3)}
    assert len(runs) == 4  # same seed, same output; four operations, four outputs


def test_synonyms_are_single_common_words_for_dictionary_forms_only() -> None:
    lexicon = default_synonyms()
    assert "repayment" in lexicon.synonyms("refund")
    assert lexicon.synonyms("the") == () and lexicon.synonyms("refunds") == ()  # stopword; inflected
    assert all(s.isalpha() and s.islower() for s in lexicon.synonyms("order"))


def test_operations_rotate_over_a_rows_variants() -> None:
    ops = list(eda.OPERATIONS)
    for seed in (0, 5, 123456):
        assert {eda.pick_operation(ops, v, seed) for v in range(4)} == set(ops)


def test_char_noise_always_makes_a_typo_and_is_deterministic() -> None:
    for seed, rate in itertools.product(range(30), (0.01, 0.1)):
        out = noise.augment(TEXT, rate=rate, operations=noise.OPERATIONS, seed=seed)
        assert out.lower() != TEXT.lower()
        assert out == noise.augment(TEXT, rate=rate, operations=noise.OPERATIONS, seed=seed)
    only_case = noise.augment(TEXT, rate=0.3, operations=["case", "keyboard"], seed=1)
    assert only_case.lower() != TEXT.lower()
    assert noise.augment("1234 !!", rate=0.5, operations=noise.OPERATIONS, seed=1) == "1234 !!"
    assert noise.KEYBOARD_NEIGHBOURS["s"] == "acdeqwxz"


def test_apply_rule_is_what_the_worker_runs() -> None:
    out = apply_rule("eda", TEXT, {"alpha": 0.1, "operations": ["swap"]}, seed=9, variant=0)
    assert out == eda.augment(TEXT, operation="swap", alpha=0.1, seed=9)
    with pytest.raises(ValueError):
        apply_rule("backtranslate", TEXT, {}, seed=1, variant=0)


@pytest.mark.parametrize(("raw", "clean"), [
    ('"Where is my parcel?"', "Where is my parcel?"),
    ("Sure! Here's a rewritten version:\n\nMy parcel still hasn't arrived.", "My parcel still hasn't arrived."),
    ("Rewritten message: Where's my order?", "Where's my order?"),
    ("“Can I get my money back?”\nThis keeps the intent.", "Can I get my money back?"),
    ('"I never got my package and', "I never got my package and"),
    ("   ", ""),
])
def test_llm_answers_are_cleaned_to_one_utterance(raw: str, clean: str) -> None:
    assert llm_output.clean(raw) == clean


@pytest.mark.parametrize(("text", "leftover"), [
    ("Sure! My parcel is late.", True),
    ("Here is a rewritten message: where is it", True),
    ("As an AI, I cannot help with that.", True),
    ("Original message: my order is late", True),
    ("Here is my order number: 4432, where is it?", False),
    ("Sure the box was crushed?", False),
    ("Can you cancel the order I made today?", False),
])
def test_prompt_leftovers_are_spotted(text: str, leftover: bool) -> None:
    assert llm_output.prompt_leftover(text) is leftover


def test_charset_and_normalisation() -> None:
    assert charset_problem("fine text, with é and 日本") is None
    assert charset_problem("bell\x07") == "control_character"
    assert charset_problem("bad \ufffd byte") == "replacement_character"
    assert charset_problem("private \ue000") == "private_or_unassigned"
    assert charset_problem("12 !!") == "no_letters"
    assert normalise("  Where IS   my ﬁle ") == "where is my file"


def test_diversity_metrics() -> None:
    assert distinct_n(["a b c", "a b d"], 1) == round(4 / 6, 4)
    assert distinct_n(["a b c", "a b d"], 2) == round(3 / 4, 4)
    assert distinct_n([], 1) is None
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(50, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    sims = emb @ emb.T
    brute = (sims.sum() - np.trace(sims)) / (50 * 49)
    assert mean_pairwise_cosine(emb) == pytest.approx(brute, abs=1e-4)
    assert mean_pairwise_cosine(emb[:1]) is None


def test_centroid_classifier_leave_one_out() -> None:
    emb = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.8, 0.2]], dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    clf = CentroidClassifier.fit(emb, ["a", "a", "b", "b", "b"])
    assert clf is not None
    assert clf.predict(emb[:3]) == ["a", "a", "b"]
    assert clf.leave_one_out_accuracy == 0.8  # the [0.8, 0.2] "b" row sits with the a's
    assert CentroidClassifier.fit(emb, ["a"] * 5) is None


def test_records_from_each_format_and_their_errors() -> None:
    csv_bytes = "\ufeffid,text,label\n1,\"Hello, there\",greet\n".encode()
    assert read_records(io.BytesIO(csv_bytes), "csv") == [{"id": "1", "text": "Hello, there", "label": "greet"}]
    jsonl = b'{"id": 2, "text": "Hi", "label": 0}\n\n'
    rows = select_rows(read_records(io.BytesIO(jsonl), "jsonl"), text_field="text", label_field="label",
                       id_field="id", max_rows=10)
    assert [(r.row_id, r.label, r.text) for r in rows] == [("2", "0", "Hi")]
    numbered = select_rows([{"text": "a", "label": "x"}, {"text": "b", "label": "y"}], text_field="text",
                           label_field="label", id_field=None, max_rows=10)
    assert [r.row_id for r in numbered] == ["row-000001", "row-000002"]
    with pytest.raises(InvalidInput, match="CSV line 2 has more cells than the header"):
        read_records(io.BytesIO(b"id,text\n1,a,extra\n"), "csv")
    with pytest.raises(InvalidInput, match="JSONL line 1 is not a JSON object"):
        read_records(io.BytesIO(b"[1, 2]\n"), "jsonl")
    with pytest.raises(InvalidInput, match=r"label'.* must be a non-empty string or an integer"):
        select_rows([{"id": "a", "text": "t", "label": True}], text_field="text", label_field="label",
                    id_field="id", max_rows=10)


def test_dataset_keys_accept_only_exporter_names() -> None:
    job = "job_" + "0" * 28
    assert keys.dataset_file_key("default", job, "data/train-00000-of-00001.parquet") == \
        f"tenants/default/jobs/{job}/dataset/data/train-00000-of-00001.parquet"
    for bad in ("../manifest.json", "data/../../x", "README.md/..", "data/train.parquet", "/etc/passwd"):
        with pytest.raises(ValueError):
            keys.dataset_file_key("default", job, bad)
    assert keys.dataset_shard_name(1, 3) == "data/train-00001-of-00003.parquet"
    assert keys.job_report_key("default", job) == f"tenants/default/jobs/{job}/report.json"


def test_eda_keeps_a_one_word_text_and_handles_empty_input() -> None:
    assert eda.augment("Hi", operation="swap", alpha=0.1, seed=1) == "Hi"
    assert eda.augment("Hi", operation="delete", alpha=0.1, seed=1) == "Hi"
    assert eda.augment("", operation="swap", alpha=0.1, seed=1) == ""
    random.seed(0)  # the module never touches the global RNG
    before = random.random()
    random.seed(0)
    eda.augment(TEXT, operation="synonym", alpha=0.3, seed=1)
    assert random.random() == before


def test_stages_that_do_not_apply_are_not_counted_as_evaluated() -> None:
    """Rows generated per label have no own source row; one label leaves nothing to classify."""
    from factory.augmentation.schemas import FilterSpec
    from workers.augment.filters import Candidate, FilterPipeline, Source

    vectors = {"source one": [1.0, 0.0], "source two": [0.0, 1.0], "made from one": [0.8, 0.6],
               "new for the label": [0.6, 0.8]}

    def encode(texts: list[str]) -> np.ndarray:  # a stand-in for the sentence encoder: fixed vectors
        return np.array([vectors[t] for t in texts], dtype=np.float32).reshape(len(texts), 2)

    sources = [Source("s1", "only", "source one"), Source("s2", "only", "source two")]
    cands = [Candidate("i1", "eda", "only", "made from one", "s1"),
             Candidate("i2", "generate", "only", "new for the label", None)]
    result = FilterPipeline(FilterSpec(label_check="centroid", near_duplicate=0.99), encode).run(cands, sources)
    stages = {s.name: s.as_dict() for s in result.stages}
    assert stages["similarity_band"]["evaluated"] == 1 and stages["similarity_band"]["detail"] == {
        "not_applicable": 1}
    assert stages["label_consistency"]["evaluated"] == 0
    assert stages["label_consistency"]["acceptance_rate"] is None
    assert [v.accepted for v in result.verdicts] == [True, True]
    assert result.verdicts[0].similarity == 0.8 and result.verdicts[1].similarity is None


def test_records_are_decoded_as_a_stream_with_offsets_in_the_whole_file() -> None:
    from factory.augmentation import sources
    from factory.storage.streams import ChunkStream

    def trickle(data: bytes, size: int) -> io.BufferedReader:  # a stored upload, a few bytes per read
        return io.BufferedReader(ChunkStream(iter([data[i:i + size] for i in range(0, len(data), size)])),
                                 buffer_size=size)

    text = "\ufeffid,text,label\n1,Crème brûlée for two,order\n2,\"a quoted\nline\",ask\n"
    expected = [{"id": "1", "text": "Crème brûlée for two", "label": "order"},
                {"id": "2", "text": "a quoted\nline", "label": "ask"}]
    for size in (1, 2, 3, 7, 1 << 16):  # multi-byte characters and the BOM split across reads
        assert sources.read_records(trickle(text.encode(), size), "csv") == expected
    bad = "id,text,label\n1,Crème brûlée,order\n".encode() + b"2,caf\xe9,order\n"
    offset = bad.index(b"\xe9")
    for size in (1, 3, 5, 1 << 16):
        with pytest.raises(InvalidInput, match=rf"first bad byte at offset {offset}\)"):
            sources.read_records(trickle(bad, size), "csv")
    with pytest.raises(InvalidInput, match="line 1 is longer than"):
        sources.read_records(io.BytesIO(b"x" * (sources.MAX_LINE_CHARS + 2)), "jsonl")
