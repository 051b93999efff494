"""Item-KNN updated with new events equals item-KNN fitted again on all of them: the counts, the similarity matrix
(same entries, same values bit for bit, ties broken the same way) and the scores — for new users, events appended to
existing users, new items, several updates in a row, an empty update, after save and load, and on Amazon Beauty.
A reference computed from the definition (dense, float64) checks `fit` itself."""
import numpy as np
import pytest

from huaxiang.errors import HuaxiangError
from huaxiang.models.seqrec import load_model, save_model
from huaxiang.models.seqrec.data import read_sequences
from huaxiang.models.seqrec.itemknn import ItemKNN, appended_events

from conftest import DATA

K = 5  # few neighbours, small integer counts: many rows truncated, many ties at the cut


def synthetic(seed: int, users: int = 200, items: int = 60) -> list[list[int]]:
    """Sequences with popular items, items repeated later in a sequence and immediate repeats."""
    rng = np.random.default_rng(seed)
    p = 1 / np.arange(1, items + 1) ** 0.8
    out = []
    for _ in range(users):
        s = list(rng.choice(np.arange(1, items + 1), size=int(rng.integers(1, 15)), p=p / p.sum()))
        if len(s) > 2 and rng.random() < 0.3:
            s.insert(1, s[0])  # an immediate repeat: a transition i → i
        out.append([int(i) for i in s])
    return out


def reference(train: list[list[int]], n_items: int, k: int, w: float = 1.0) -> np.ndarray:
    """The similarity matrix from its definition, dense and untruncated (float64)."""
    x = np.zeros((len(train), n_items + 1))
    t = np.zeros((n_items + 1, n_items + 1))
    for u, s in enumerate(train):
        x[u, s] = 1
        for a, b in zip(s, s[1:]):
            t[a, b] += 1
    co = x.T @ x
    np.fill_diagonal(co, 0)
    n = np.sqrt(x.sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.nan_to_num(co / np.outer(n, n))
    return cos + w * t / np.maximum(t.sum(axis=1, keepdims=True), 1)


def assert_same(updated: ItemKNN, refit: ItemKNN):
    """Equal models: the counts exactly, and sim_ with the same entries and values."""
    a, b = updated.sim_, refit.sim_
    assert a.shape == b.shape
    assert np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
    assert np.allclose(a.data, b.data, rtol=1e-6, atol=0)
    assert np.array_equal(a.data, b.data)  # computed entry by entry from the same integer counts
    for name in ("users_", "co_", "trans_"):
        x, y = getattr(updated, name), getattr(refit, name)
        assert x.shape == y.shape and (x != y).nnz == 0, name
    assert np.array_equal(updated.counts_, refit.counts_) and np.array_equal(updated.last_, refit.last_)


def split_events(seqs: list[list[int]], seed: int, parts: int) -> list[list[list[int]]]:
    """Each sequence cut at random places into `parts` consecutive pieces (some empty)."""
    rng = np.random.default_rng(seed)
    out = [[] for _ in range(parts)]
    for s in seqs:
        cuts = np.sort(rng.integers(0, len(s) + 1, parts - 1))
        for p, piece in enumerate(np.split(np.array(s, dtype=int), cuts)):
            out[p].append([int(i) for i in piece])
    return out


def test_fit_matches_the_definition():
    train = synthetic(1)
    m = ItemKNN(neighbours=K).fit(train, 60)
    ref = reference(train, 60, K)
    sim = m.sim_.toarray()
    for i in range(61):
        row = ref[i]
        kept = np.flatnonzero(sim[i])
        assert len(kept) == min(K, np.count_nonzero(row))
        assert np.allclose(sim[i, kept], row[kept], rtol=1e-6)
        if len(kept):  # a true top-k: nothing left out scores more than what was kept
            assert row[np.setdiff1d(np.arange(61), kept)].max() <= row[kept].min() + 1e-6
            # ties at the cut go to the lower item index
            cut = sim[i, kept].min()
            tied_out = np.setdiff1d(np.flatnonzero(np.isclose(row, cut, rtol=1e-6)), kept)
            tied_in = kept[np.isclose(sim[i, kept], cut, rtol=1e-6)]
            assert not len(tied_out) or tied_out.min() > tied_in.max()


def test_counts_and_transitions_by_hand():
    """[[1, 2], [2, 3]] then user 0 continues with 3, 1: sequences [[1, 2, 3, 1], [2, 3]]."""
    m = ItemKNN().fit([[1, 2], [2, 3]], 3)
    m.update({0: [3, 1]}, 3)
    assert m.counts_.tolist() == [0, 1, 2, 2]  # user 0 already had item 1: counted once
    assert m.co_.toarray().tolist() == [[0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 0, 2], [0, 1, 2, 0]]
    # 1→2, 2→3 (user 0's old last item to the first new one), 3→1, and user 1's 2→3
    assert m.trans_.toarray().tolist() == [[0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 2], [0, 1, 0, 0]]
    assert m.last_.tolist() == [1, 3]
    assert_same(m, ItemKNN().fit([[1, 2, 3, 1], [2, 3]], 3))
    # an item user 0 already has: no co-occurrence or count changes, but the transition 1 → 2 changes row 1, which
    # shares no user with item 4, new for user 1 (rows 2, 3 and 4 change with it)
    assert m.update({0: [2], 1: [4]}, 4).tolist() == [1, 2, 3, 4]
    assert_same(m, ItemKNN().fit([[1, 2, 3, 1, 2], [2, 3, 4]], 4))


def test_ties_go_to_the_lower_item_index():
    """Item 1 is equally similar to the odd items 3..299 (two users and two transitions each), less to the even ones
    (one each): the 5 kept are 3, 5, .., 11, in fit and after an update that adds the lower ones last."""
    def users(items):
        return [[1, j] for j in items] + [[1, j] for j in items if j % 2]
    m = ItemKNN(neighbours=5).fit(users(range(300, 1, -1)), 300)
    assert m.sim_[1].indices.tolist() == [3, 5, 7, 9, 11]
    m = ItemKNN(neighbours=5).fit(users(range(300, 20, -1)), 300)
    assert m.sim_[1].indices.tolist() == [21, 23, 25, 27, 29]
    m.update(dict(enumerate(users(range(20, 1, -1)), start=len(users(range(300, 20, -1))))), 300)
    assert m.sim_[1].indices.tolist() == [3, 5, 7, 9, 11]
    assert_same(m, ItemKNN(neighbours=5).fit(users(range(300, 20, -1)) + users(range(20, 1, -1)), 300))


def test_new_users_only():
    train = synthetic(2)
    m = ItemKNN(neighbours=K).fit(train[:150], 60)
    m.update({u: train[u] for u in range(150, 200)}, 60)
    assert_same(m, ItemKNN(neighbours=K).fit(train, 60))


def test_events_appended_to_existing_users():
    train = synthetic(3)
    head, tail = split_events(train, 3, 2)
    m = ItemKNN(neighbours=K).fit(head, 60)
    changed = m.update(appended_events(head, train), 60)
    assert 0 < len(changed) <= 61
    assert_same(m, ItemKNN(neighbours=K).fit(train, 60))


def test_new_items():
    """Items 41..60 appear only in the update; n_items grows from 40 to 60."""
    train = synthetic(4)
    old = [s[:next((p for p, i in enumerate(s) if i > 40), len(s))] for s in train]
    assert max(max(s, default=0) for s in old) <= 40 and any(len(o) < len(s) for o, s in zip(old, train))
    m = ItemKNN(neighbours=K).fit(old, 40)
    m.update(appended_events(old, train + [[60, 59, 1]]), 60)  # and a new user
    assert m.sim_.shape == (61, 61)
    assert_same(m, ItemKNN(neighbours=K).fit(train + [[60, 59, 1]], 60))


def test_several_updates_in_a_row_and_scores():
    train = synthetic(5, users=250)
    pieces = split_events(train, 5, 4)
    so_far = pieces[0][:200]  # the last 50 users arrive in the later pieces
    m = ItemKNN(neighbours=K).fit(so_far, 60)
    for piece in pieces[1:]:
        now = [a + b for a, b in zip(so_far + [[]] * 50, piece)]
        m.update(appended_events(so_far, now), 60)
        refit = ItemKNN(neighbours=K).fit(now, 60)
        assert_same(m, refit)
        so_far = now
    histories = [s[-6:] for s in train[:40]] + [[7]]
    assert np.array_equal(m.score(histories), refit.score(histories))
    for h in histories[:5]:
        assert np.array_equal(m.score([h]), refit.score([h]))


def test_an_empty_update_changes_nothing():
    train = synthetic(6)
    m = ItemKNN(neighbours=K).fit(train, 60)
    before = m.sim_.copy()
    assert len(m.update({}, 60)) == 0 and len(m.update({3: []}, 60)) == 0
    assert (m.sim_ != before).nnz == 0
    assert_same(m, ItemKNN(neighbours=K).fit(train, 60))
    m.update({}, 65)  # more items, none with events yet
    assert_same(m, ItemKNN(neighbours=K).fit(train, 65))


def test_save_load_update(tmp_path):
    train = synthetic(7)
    head, _ = split_events(train, 7, 2)
    save_model(ItemKNN(neighbours=K).fit(head, 60), str(tmp_path / "knn"))
    m = load_model(str(tmp_path / "knn"))
    m.update(appended_events(head, train), 60)
    assert_same(m, ItemKNN(neighbours=K).fit(train, 60))


def test_a_model_saved_without_the_counts_serves_but_asks_for_a_refit(tmp_path):
    train = synthetic(8)
    fitted = ItemKNN(neighbours=K).fit(train, 60)
    save_model(fitted, str(tmp_path / "knn"))
    for f in ("users.npz", "co.npz", "trans.npz", "counts.npy", "last.npy"):  # as saved before they were kept
        (tmp_path / "knn" / f).unlink()
    m = load_model(str(tmp_path / "knn"))
    assert np.array_equal(m.score([[1, 2, 3]]), fitted.score([[1, 2, 3]]))
    with pytest.raises(HuaxiangError, match="saved without the counts an update needs: refit"):
        m.update({0: [1]}, 60)


def test_bad_updates_are_one_line_errors():
    m = ItemKNN().fit([[1, 2, 3]], 3)
    with pytest.raises(HuaxiangError, match="user 0 has item 4, outside 1..3"):
        m.update({0: [4]}, 3)
    with pytest.raises(HuaxiangError, match="user 1 has item 0, outside"):
        m.update({1: [0]}, 3)
    with pytest.raises(HuaxiangError, match="n_items 2 is below the model's 3"):
        m.update({}, 2)
    with pytest.raises(HuaxiangError, match="sequence 0 does not continue"):
        appended_events([[1, 2]], [[2, 1, 3]])
    with pytest.raises(HuaxiangError, match="fewer than"):
        appended_events([[1], [2]], [[1]])
    assert appended_events([[1, 2], [3]], [[1, 2, 4], [3], [5, 6]]) == {0: [4], 2: [5, 6]}


def test_update_equals_refit_on_amazon_beauty():
    """Amazon Beauty (22k users): the last 10% of users arrive later, and every other user's last item."""
    data = read_sequences(str(DATA / "Beauty.txt.gz"))
    cut = int(len(data.seqs) * 0.9)
    old = [s[:-1] for s in data.seqs[:cut]]
    m = ItemKNN().fit(old, max(max(s) for s in old))
    m.update(appended_events(old, [s[:-1] for s in data.seqs]), data.n_items)  # new users, without their last
    changed = m.update({u: data.seqs[u][-1:] for u in range(len(data.seqs))}, data.n_items)  # everyone's last
    assert len(changed) > 0
    refit = ItemKNN().fit(data.seqs, data.n_items)
    assert_same(m, refit)
    histories = [s[-10:] for s in data.seqs[:200]]
    assert np.array_equal(m.score(histories), refit.score(histories))
