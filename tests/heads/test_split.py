from heads.split import split_masks, split_of


def test_split_of_is_deterministic_and_order_independent():
    ids = [f"id-{k}" for k in range(2000)]
    a = split_masks(ids)
    b = split_masks(ids[::-1])
    assert (a["test"] == b["test"][::-1]).all()
    assert split_of("id-7") == split_of("id-7")


def test_split_masks_partition_rows_in_roughly_80_10_10():
    m = split_masks([f"id-{k}" for k in range(5000)])
    assert (m["train"] ^ m["val"] ^ m["test"]).all()
    assert 0.08 < m["test"].mean() < 0.12 and 0.08 < m["val"].mean() < 0.12
