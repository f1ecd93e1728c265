from collections import Counter

import pytest

from nas_reid.data.sampler import PKBatchSampler
from nas_reid.errors import UserError


def _pids(counts):
    """Dataset pid list where identity i has counts[i] images."""
    return [pid for pid, n in enumerate(counts) for _ in range(n)]


def test_every_batch_is_p_identities_times_k_images():
    pids = _pids([8, 5, 12, 3, 7, 9, 4, 6, 10, 2])
    sampler = PKBatchSampler(pids, p=3, k=4, seed=1, num_replicas=1, rank=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) > 0
    for batch in batches:
        assert len(batch) == 12
        per_pid = Counter(pids[i] for i in batch)
        assert len(per_pid) == 3
        assert set(per_pid.values()) == {4}
        # the k images of one identity are consecutive in the batch
        for j in range(0, 12, 4):
            assert len({pids[i] for i in batch[j:j + 4]}) == 1


def test_no_image_repeats_within_an_epoch_when_identities_have_enough_images():
    pids = _pids([8] * 10)
    batches = list(PKBatchSampler(pids, p=2, k=4, seed=0, num_replicas=1, rank=0))
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat))
    # 20 chunks of 4 in all; the epoch stops when fewer than p identities still have chunks
    assert 8 <= len(batches) <= 10


def test_small_identities_are_drawn_with_replacement():
    pids = _pids([1, 2, 1, 3])
    batches = list(PKBatchSampler(pids, p=4, k=4, seed=0, num_replicas=1, rank=0))
    assert len(batches) == 1
    assert Counter(pids[i] for i in batches[0]) == {0: 4, 1: 4, 2: 4, 3: 4}


def test_same_seed_same_order_and_epochs_differ():
    pids = _pids([6] * 12)
    a = PKBatchSampler(pids, p=4, k=2, seed=3, num_replicas=1, rank=0)
    b = PKBatchSampler(pids, p=4, k=2, seed=3, num_replicas=1, rank=0)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    c = PKBatchSampler(pids, p=4, k=2, seed=4, num_replicas=1, rank=0)
    assert list(c) != first


def test_ranks_get_disjoint_equal_shares_of_the_global_order():
    pids = _pids([7, 9, 8, 12, 5, 6, 10, 8, 9, 11])
    whole = list(PKBatchSampler(pids, p=2, k=4, seed=5, num_replicas=1, rank=0))
    r0 = list(PKBatchSampler(pids, p=2, k=4, seed=5, num_replicas=2, rank=0))
    r1 = list(PKBatchSampler(pids, p=2, k=4, seed=5, num_replicas=2, rank=1))
    assert len(r0) == len(r1) == len(whole) // 2
    assert r0 == whole[0::2][: len(r0)]
    assert r1 == whole[1::2][: len(r1)]
    assert not {tuple(b) for b in r0} & {tuple(b) for b in r1}


def test_resume_continues_with_the_next_batch():
    pids = _pids([6] * 12)
    sampler = PKBatchSampler(pids, p=3, k=2, seed=0, num_replicas=1, rank=0)
    sampler.set_epoch(2)
    full = list(sampler)
    resumed = PKBatchSampler(pids, p=3, k=2, seed=0, num_replicas=1, rank=0)
    resumed.set_epoch(2, start_batch=4)
    assert list(resumed) == full[4:]


def test_bad_parameters_are_clear_errors():
    with pytest.raises(UserError, match="at least p=5 identities"):
        PKBatchSampler(_pids([4, 4]), p=5, k=2, num_replicas=1, rank=0)
    with pytest.raises(UserError, match="k >= 1"):
        PKBatchSampler(_pids([4, 4]), p=1, k=0, num_replicas=1, rank=0)
    with pytest.raises(UserError, match="rank 2"):
        PKBatchSampler(_pids([4, 4]), p=1, k=2, num_replicas=2, rank=2)
