"""The embedding layer behaves like torch.nn.Embedding, padding included."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_lib.embedding import Embedding, nearest_neighbours, one_hot_embed


def _pair(vocab=11, d_model=6, padding_idx=None):
    """Our layer and torch's with the same weights."""
    torch.manual_seed(0)
    ours = Embedding(vocab, d_model, padding_idx)
    theirs = torch.nn.Embedding(vocab, d_model, padding_idx=padding_idx)
    with torch.no_grad():
        theirs.weight.copy_(ours.weight)
    return ours, theirs


@pytest.mark.parametrize("padding_idx", [None, 0, 4, -1], ids=["none", "first", "middle", "last"])
def test_forward_and_gradient_match_torch(padding_idx):
    ours, theirs = _pair(padding_idx=padding_idx)
    ids = torch.tensor([[0, 4, 10, 4], [3, 3, 0, 10]])
    upstream = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours(ids), theirs(ids))
    (ours(ids) * upstream).sum().backward()
    (theirs(ids) * upstream).sum().backward()
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad)


def test_padding_row_starts_at_zero_and_stays_there_through_training():
    emb = Embedding(8, 4, padding_idx=2)
    assert emb.weight[2].eq(0).all()
    optimizer = torch.optim.SGD(emb.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        emb(torch.tensor([2, 2, 5, 1])).square().sum().backward()
        optimizer.step()
    assert emb.weight[2].eq(0).all() and emb.weight[5].ne(0).all()


def test_initial_weights_are_standard_normal():
    torch.manual_seed(0)
    weight = Embedding(1000, 64).weight.detach()
    assert abs(weight.mean().item()) < 0.01 and abs(weight.std().item() - 1.0) < 0.01
    # Each vector's length is then about sqrt(d_model).
    assert abs(weight.norm(dim=-1).mean().item() - 8.0) < 0.1


def test_any_shape_of_ids():
    emb = Embedding(5, 3)
    assert emb(torch.tensor(2)).shape == (3,)
    assert emb(torch.zeros(2, 3, 4, dtype=torch.long)).shape == (2, 3, 4, 3)


@pytest.mark.parametrize(
    ("ids", "error"),
    [
        (torch.tensor([0, 5]), ValueError),
        (torch.tensor([-1]), ValueError),
        (torch.tensor([0.0, 1.0]), TypeError),
    ],
    ids=["too large", "negative", "float ids"],
)
def test_bad_ids_raise_clear_errors(ids, error):
    with pytest.raises(error):
        Embedding(5, 3)(ids)


@pytest.mark.parametrize(
    ("args", "error"),
    [((0, 3), ValueError), ((5, 3, 5), ValueError), ((5, 3, 1.0), TypeError)],
    ids=["empty vocabulary", "padding_idx too large", "float padding_idx"],
)
def test_bad_construction_raises(args, error):
    with pytest.raises(error):
        Embedding(*args)


def test_follows_the_device_and_dtype_of_its_weights():
    emb = Embedding(5, 3).double()
    assert emb(torch.tensor([1, 2])).dtype == torch.float64


def test_one_hot_times_the_matrix_is_a_lookup():
    weight = torch.randn(9, 4, dtype=torch.float64)
    ids = torch.tensor([[8, 0, 3], [3, 3, 1]])
    torch.testing.assert_close(one_hot_embed(ids, weight), weight[ids])
    torch.testing.assert_close(one_hot_embed(ids, weight.float()), weight.float()[ids])


def test_one_hot_embed_rejects_ids_outside_the_vocabulary():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        one_hot_embed(torch.tensor([3]), torch.zeros(3, 2))


def test_nearest_neighbours_use_cosine_not_dot_product():
    # Row 1 points the same way as row 0 but is short; row 2 is long and at 45 degrees.
    weight = torch.tensor([[1.0, 0.0], [0.1, 0.0], [10.0, 10.0], [0.0, 1.0], [-1.0, 0.0]])
    assert nearest_neighbours(weight, 0, 4) == [1, 2, 3, 4]
    scores = weight @ weight[0]
    assert scores.argsort(descending=True)[0].item() == 2  # a dot product would rank row 2 first


def test_nearest_neighbours_agree_with_torch_cosine_similarity():
    weight = torch.randn(30, 8, generator=torch.Generator().manual_seed(2))
    sims = F.cosine_similarity(weight, weight[7].unsqueeze(0), dim=-1)
    sims[7] = -2.0
    assert nearest_neighbours(weight, 7, 5) == sims.argsort(descending=True)[:5].tolist()


@pytest.mark.parametrize(("index", "k"), [(5, 1), (0, 5), (-1, 1)], ids=["index", "k", "neg"])
def test_nearest_neighbours_reject_bad_arguments(index, k):
    with pytest.raises(ValueError):
        nearest_neighbours(torch.randn(5, 2), index, k)
