"""Large host buffers: mappings are lent again inside a run, never while a tensor uses them."""

from __future__ import annotations

import gc

import torch

from tilewise._alloc import host_empty, reuse_freed_memory

SHAPE = (4, 1 << 20)  # 16 MiB of float32: above the mapping threshold


def test_a_freed_mapping_is_lent_again_only_inside_a_run_and_only_once_free():
    with reuse_freed_memory():
        a, fresh = host_empty(SHAPE, torch.float32)
        assert fresh
        a.fill_(3.0)
        view = a[2:]  # outlives the tensor it was cut from
        ptr = a.data_ptr()
        del a
        gc.collect()
        b, fresh_b = host_empty(SHAPE, torch.float32)
        assert fresh_b  # the view still holds the first mapping
        assert b.data_ptr() != ptr
        assert float(view.min()) == 3.0
        del view
        c, fresh_c = host_empty(SHAPE, torch.float32)
        assert not fresh_c  # lent again: not zero-filled, the caller clears what it needs
        assert c.data_ptr() == ptr
        arr = c.numpy()  # a numpy view holds it as well
        del c
        d, fresh_d = host_empty(SHAPE, torch.float32)
        assert fresh_d
        assert arr.sum() == 3.0 * arr.size
        del b, d, arr
    e, fresh_e = host_empty(SHAPE, torch.float32)  # outside a run: always a fresh mapping
    assert fresh_e
    assert float(e.abs().max()) == 0.0


def test_a_much_larger_mapping_is_not_lent_for_a_small_buffer():
    with reuse_freed_memory():
        big, _ = host_empty((4, 4 << 20), torch.float32)  # 64 MiB
        del big
        small, fresh = host_empty(SHAPE, torch.float32)  # 16 MiB: would pin 48 MiB more
        assert fresh
        assert small.shape == SHAPE


def test_free_mappings_beyond_the_spare_bytes_are_unmapped_while_others_are_lent():
    from tilewise._alloc import _POOL

    with reuse_freed_memory():
        small, _ = host_empty(SHAPE, torch.float32)
        big, _ = host_empty((4, 64 << 20), torch.float32)  # 1 GiB, never written
        del small, big
        for _ in range(3):  # the run goes on with small buffers only
            t, fresh = host_empty(SHAPE, torch.float32)
            assert not fresh
            del t
        assert all(len(m) < 1 << 30 for m in _POOL.maps)  # the big one is gone
