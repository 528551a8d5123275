"""Class vectors and the similarity matrix S: hand-worked values on toy vectors, and the real 191-row GloVe file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sgseg.models.masks import DEFAULT_ALIASES, build_similarity, class_vectors, one_to_one_sources
from sgseg.models.masks.similarity import load_word_vectors, main


def _toy() -> dict[str, np.ndarray]:
    return {
        "cat": np.array([1.0, 0.0]),
        "dog": np.array([0.0, 1.0]),
        "hot": np.array([2.0, 0.0]),
        "dog_house": np.array([5.0, 5.0]),
        "kitten": np.array([2.0, 0.0]),
        "pup": np.array([0.5, 0.5]),
    }


def test_class_vectors_whole_name_then_word_mean():
    kv = _toy()
    v = class_vectors(["cat", "dog house", "hot dog", "hot_dog"], kv)
    assert v.dtype == torch.float32
    torch.testing.assert_close(v[0], torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(v[1], torch.tensor([5.0, 5.0]))  # whole key `dog_house` wins over the words
    torch.testing.assert_close(v[2], torch.tensor([1.0, 0.5]))  # mean of hot and dog
    torch.testing.assert_close(v[3], torch.tensor([1.0, 0.5]))


def test_class_vectors_lists_every_missing_word():
    with pytest.raises(KeyError) as err:
        class_vectors(["cat", "zebra crossing", "unicorn"], _toy())
    msg = str(err.value)
    assert "zebra" in msg and "crossing" in msg and "unicorn" in msg


def test_build_similarity_hand_worked():
    kv = _toy()
    # kitten·cat = 2, kitten·dog = 0 → softmax (e²/(e²+1), 1/(e²+1)) = (0.8808, 0.1192), both ≥ 0.05.
    # pup·cat = pup·dog = 0.5 → (0.5, 0.5). `puppy` aliases to dog → one-hot.
    s = build_similarity(["cat", "kitten", "pup", "puppy"], ["cat", "dog"], kv, aliases={"puppy": "dog"})
    e2 = math.exp(2)
    expected = torch.tensor([[1, 0], [e2 / (e2 + 1), 1 / (e2 + 1)], [0.5, 0.5], [0, 1]], dtype=torch.float32)
    torch.testing.assert_close(s, expected)
    # temperature 0.5 doubles the logits: (e⁴/(e⁴+1), 0.018) with no threshold; threshold 0.2 drops 0.119.
    s = build_similarity(["kitten"], ["cat", "dog"], kv, aliases={}, temperature=0.5, threshold=0.0)
    torch.testing.assert_close(s[0, 0], torch.tensor(math.exp(4) / (math.exp(4) + 1), dtype=torch.float32))
    s = build_similarity(["kitten"], ["cat", "dog"], kv, aliases={}, threshold=0.2)
    torch.testing.assert_close(s, torch.tensor([[1.0, 0.0]]))


def test_threshold_above_every_entry_keeps_argmax():
    s = build_similarity(["pup", "kitten"], ["cat", "dog"], _toy(), aliases={}, threshold=0.99)
    assert torch.equal(s.sum(1), torch.ones(2))
    assert s[1, 0] == 1.0


def test_aliases_to_absent_sources_are_ignored():
    # The default VG→COCO table must be harmless on other label spaces (e.g. the synthetic benchmark).
    fixed = one_to_one_sources(["man", "cat"], ["cat", "dog"], DEFAULT_ALIASES)
    assert fixed == {1: 0}


def test_default_aliases_are_the_reference_table():
    people = (
        "woman men man lady girl guy boy child kid people player head arm face jacket jean leg pant short"
    )
    assert {k for k, v in DEFAULT_ALIASES.items() if v == "person"} == set(people.split())
    assert DEFAULT_ALIASES["plant"] == DEFAULT_ALIASES["branch"] == "potted plant"
    assert DEFAULT_ALIASES["screen"] == "tv" and DEFAULT_ALIASES["phone"] == "cell phone"
    assert len(DEFAULT_ALIASES) == 27


@pytest.fixture(scope="module")
def real_similarity(shared_data):
    from gensim.models import KeyedVectors

    names = json.loads((shared_data / "class-names.json").read_text())
    kv = KeyedVectors.load_word2vec_format(
        str(shared_data / "class-embeddings.glove840b.300d.txt"), binary=False, no_header=True
    )
    assert len(kv) == 191
    vg, coco = names["vg150_objects"], names["coco80_objects"]
    return build_similarity(vg, coco, kv), vg, coco, kv


def test_real_similarity_counts_and_rows(real_similarity):
    s, vg, coco, _ = real_similarity
    assert s.shape == (150, 80)
    assert (s >= 0).all()
    torch.testing.assert_close(s.sum(1), torch.ones(150))
    assert len(one_to_one_sources(vg, coco)) == 66
    assert int((s.max(1).values == 1).sum()) == 94
    # Every non-zero entry survived the 0.05 threshold, so after renormalisation it is still ≥ 0.05.
    assert (s[s > 0] >= 0.05).all()
    row = dict(zip(coco, s[vg.index("paw")].tolist()))
    assert row["cat"] > 0.4 and row["dog"] > 0.4 and row["cat"] + row["dog"] == pytest.approx(1.0, abs=1e-6)
    assert s[vg.index("flower"), coco.index("vase")] == 1.0
    assert s[vg.index("man"), coco.index("person")] == 1.0
    assert s[vg.index("bike"), coco.index("motorcycle")] == 1.0
    assert s[vg.index("table"), coco.index("dining table")] == 1.0


def test_real_similarity_matches_independent_numpy_route(real_similarity, shared_data):
    s, vg, coco, kv = real_similarity
    # Independent route for the novel rows: plain numpy on the raw file rows.
    raw = {}
    for line in (shared_data / "class-embeddings.glove840b.300d.txt").read_text().splitlines():
        k, *vals = line.split(" ")
        raw[k] = np.array(vals, dtype=np.float64)
    src = np.stack([raw[c.replace(" ", "_")] for c in coco])
    for name in ("paw", "basket", "tree", "window"):
        logits = src @ raw[name]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        p[p < 0.05] = 0
        p /= p.sum()
        np.testing.assert_allclose(s[vg.index(name)].numpy(), p, atol=1e-6)


def test_cli_filters_and_saves(shared_data, tmp_path, capsys):
    out = tmp_path / "S.pt"
    s = main(["--vectors", str(shared_data / "class-embeddings.glove840b.300d.txt"), "--save", str(out)])
    text = capsys.readouterr().out
    assert "66 one-to-one" in text and "94 one-hot in all" in text
    assert "paw ← cat 0.51, dog 0.49" in text
    saved = torch.load(out)
    assert torch.equal(saved["similarity"], s) and saved["source_names"][0] == "person"
    # The streaming loader agrees with gensim's on the rows it keeps.
    vecs = load_word_vectors(shared_data / "class-embeddings.glove840b.300d.txt", ["paw", "traffic_light"])
    assert set(vecs) == {"paw", "traffic_light"} and vecs["paw"].shape == (300,)


def test_cli_targets_file(shared_data, tmp_path, capsys):
    names = tmp_path / "names.json"
    names.write_text(json.dumps(["paw", "man", "flower"]))
    vectors = str(shared_data / "class-embeddings.glove840b.300d.txt")
    s = main(["--vectors", vectors, "--targets", str(names)])
    assert s.shape == (3, 80)
    assert "1 one-to-one by name/alias" in capsys.readouterr().out
    main(["--vectors", vectors, "--targets", str(names), "--no-aliases"])
    out = capsys.readouterr().out  # man is novel now, listed with its GloVe neighbours (person wins outright)
    assert "0 one-to-one" in out and "man ← person 1.00" in out
