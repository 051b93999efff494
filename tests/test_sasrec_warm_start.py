"""SASRec warm start: the previous model's weights are carried over (item rows by item id, also when items are
renumbered), new items get fresh rows, training goes on from there, and the result saves and loads."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from huaxiang.errors import HuaxiangError  # noqa: E402
from huaxiang.models.seqrec import load_model, save_model  # noqa: E402
from huaxiang.models.seqrec.data import metrics, ranks_full  # noqa: E402
from huaxiang.models.seqrec.sasrec import SASRec, match_items  # noqa: E402

SMALL = dict(dim=16, max_len=10, layers=1, heads=2, dropout=0.1, lr=5e-3, batch_size=16, threads=1)


def cycles(n_users: int, items: list[str], length: int, seed: int) -> list[list[str]]:
    """Users walking the item list in order (from a random start): the next item is always predictable."""
    rng = np.random.default_rng(seed)
    return [[items[(s + k) % len(items)] for k in range(length)] for s in rng.integers(0, len(items), n_users)]


def numbered(seqs: list[list[str]], order: list[str] | None = None) -> tuple[list[list[int]], list[str]]:
    """Item indices by first appearance (after the ids in `order`, when given)."""
    index = {item: i for i, item in enumerate(order or [], 1)}
    out = [[index.setdefault(i, len(index) + 1) for i in s] for s in seqs]
    return out, list(index)


def ndcg(m, seqs: list[list[int]]) -> float:
    histories, targets = [s[:-1] for s in seqs], np.array([s[-1] for s in seqs])
    return metrics(ranks_full(m.score(histories), histories, targets))["ndcg@10"]


@pytest.fixture(scope="module")
def previous():
    items = [f"i{k}" for k in range(24)]
    seqs, old_items = numbered(cycles(120, items, 8, 0))
    prev = SASRec(**SMALL, epochs=25, patience=25, seed=0).fit(seqs, len(old_items))
    return prev, seqs, old_items


def test_match_items_maps_by_id():
    assert match_items(["a", "b", "c"], ["c", "x", "a"]).tolist() == [0, 3, -1, 1]
    assert match_items([], ["x"]).tolist() == [0, -1]


def test_warm_start_copies_weights_by_item_id(previous):
    prev, _, old_items = previous
    # the new training numbers items differently (reversed) and has 4 items the previous one never saw
    new_items = [f"n{k}" for k in range(2)] + old_items[::-1] + [f"n{k}" for k in range(2, 4)]
    index = match_items(old_items, new_items)
    warm = SASRec(**SMALL, epochs=0, seed=3).fit([[1, 2, 3]], len(new_items), init=prev, init_index=index)
    fresh = SASRec(**SMALL, epochs=0, seed=3).fit([[1, 2, 3]], len(new_items))
    assert warm.warm_ == {"items_carried": len(old_items), "items_new": 4}
    w_old, w_new, w_fresh = prev.net_.item.weight, warm.net_.item.weight, fresh.net_.item.weight
    for i, item in enumerate(new_items, 1):
        if item in old_items:  # same item, same embedding, wherever it is numbered now
            assert torch.equal(w_new[i], w_old[old_items.index(item) + 1])
        else:  # a new item keeps the fresh initialisation of this training
            assert torch.equal(w_new[i], w_fresh[i])
    old_state, new_state = prev.net_.state_dict(), warm.net_.state_dict()
    assert all(torch.equal(old_state[k], new_state[k]) for k in old_state if k != "item.weight")
    # before any training it recommends what the previous model recommends: the same scores under the new numbering
    history = [old_items.index(i) + 1 for i in ("i3", "i4", "i5")]
    old_scores = prev.score([history])[0]
    new_scores = warm.score([[new_items.index(old_items[h - 1]) + 1 for h in history]])[0]
    for i, item in enumerate(new_items, 1):
        if item in old_items:
            assert new_scores[i] == pytest.approx(old_scores[old_items.index(item) + 1], rel=1e-5, abs=1e-5)


def test_warm_start_keeps_what_was_learnt_and_trains_on(previous, tmp_path):
    prev, seqs, old_items = previous
    # new data: more users walking the same cycle, renumbered with two new items first
    more, items = numbered(cycles(40, old_items, 8, 1), order=["new1", "new2"] + old_items[::-1])
    index = match_items(old_items, items)
    valid = ([s[:-1] for s in more], np.array([s[-1] for s in more]))
    scratch = SASRec(**SMALL, epochs=1, seed=1).fit(more, len(items), valid=valid)
    warm = SASRec(**SMALL, epochs=1, seed=1).fit(more, len(items), valid=valid, init=prev, init_index=index)
    assert ndcg(prev, seqs) > 0.5  # the previous model has learnt the cycle
    assert warm.history_[0]["ndcg@10"] > 0.5 > scratch.history_[0]["ndcg@10"] + 0.2
    assert not torch.equal(warm.net_.blocks.layers[0].linear1.weight, prev.net_.blocks.layers[0].linear1.weight)
    save_model(warm, str(tmp_path / "m"))
    back = load_model(str(tmp_path / "m"))
    assert back.warm_ == warm.warm_ == {"items_carried": len(old_items), "items_new": 2}
    histories = [s[:-1] for s in more[:5]]
    np.testing.assert_array_equal(back.score(histories), warm.score(histories))


def test_same_numbering_by_default(previous):
    prev, _, old_items = previous
    warm = SASRec(**SMALL, epochs=0, seed=2).fit([[1, 2]], len(old_items) + 3, init=prev)
    assert warm.warm_ == {"items_carried": len(old_items), "items_new": 3}
    assert torch.equal(warm.net_.item.weight[1:len(old_items) + 1], prev.net_.item.weight[1:])


def test_incompatible_previous_models_are_refused(previous):
    prev, _, old_items = previous
    with pytest.raises(HuaxiangError, match="differs in dim"):
        SASRec(**{**SMALL, "dim": 8}, epochs=0).fit([[1, 2]], len(old_items), init=prev)
    with pytest.raises(HuaxiangError, match="item index"):
        SASRec(**SMALL, epochs=0).fit([[1, 2]], len(old_items), init=prev, init_index=np.zeros(3, dtype=np.int64))
    with pytest.raises(HuaxiangError, match="not trained"):
        SASRec(**SMALL, epochs=0).fit([[1, 2]], 5, init=SASRec(**SMALL))
