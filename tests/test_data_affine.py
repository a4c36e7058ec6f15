import pytest
import torch

from dgl_capsules.data import (
    ImageDataset, Splits, affine_mnist, multi_mnist, multi_splits, pad_to, random_affine, random_shift,
)


def digits(n=8, side=28):
    x = torch.zeros(n, 1, side, side)
    x[:, :, 10:18, 12:16] = torch.rand(n, 1, 8, 4)
    return ImageDataset(x, torch.arange(n) % 4)


def test_pad_to_centres():
    x = torch.rand(2, 1, 28, 28)
    p = pad_to(x, 40)
    assert p.shape == (2, 1, 40, 40)
    assert torch.equal(p[:, :, 6:34, 6:34], x)
    p[:, :, 6:34, 6:34] = 0
    assert not p.any()
    with pytest.raises(ValueError, match="size must be >= the image side 28; got 20"):
        pad_to(x, 20)


def test_random_shift_moves_whole_images_by_at_most_max_shift():
    ds = digits()
    g = torch.Generator().manual_seed(0)
    y = random_shift(ds.images, 2, g)
    assert y.shape == ds.images.shape
    assert torch.allclose(y.sum((1, 2, 3)), ds.images.sum((1, 2, 3)))  # the digit stays in the frame
    for a, b in zip(ds.images, y):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(torch.roll(a, (dy, dx), (1, 2)), b)]
        assert found
    assert not torch.equal(y, ds.images)
    assert torch.equal(random_shift(ds.images, 0), ds.images)


def test_affine_mnist_is_deterministic_per_seed():
    ds = digits()
    a, b, c = affine_mnist(ds, seed=1), affine_mnist(ds, seed=1), affine_mnist(ds, seed=2)
    assert a.images.shape == (8, 1, 40, 40) and a.images.dtype == torch.float32
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert torch.equal(a.labels, ds.labels)
    assert 0 <= a.images.min() and a.images.max() <= 1


def test_affine_mnist_identity_map_only_pads():
    ds = digits()
    same = affine_mnist(ds, rotation=0, shear=0, scale=(1, 1), translation=0)
    assert torch.allclose(same.images, pad_to(ds.images, 40), atol=1e-5)


def test_affine_mnist_rotation_keeps_the_ink():
    ds = digits()
    rot = affine_mnist(ds, rotation=20, shear=0, scale=(1, 1), translation=0)
    assert torch.allclose(rot.images.sum((1, 2, 3)), ds.images.sum((1, 2, 3)), rtol=0.05)
    assert not torch.allclose(rot.images, pad_to(ds.images, 40), atol=1e-3)


def test_multi_mnist_pairs_two_different_classes():
    ds = digits(12)
    m = multi_mnist(ds, n=30, seed=0)
    assert m.images.shape == (30, 1, 36, 36) and m.labels.shape == (30, 4)
    assert torch.equal(m.labels.sum(1), torch.full((30,), 2.0))
    assert 0 <= m.images.min() and m.images.max() <= 1
    assert torch.equal(multi_mnist(ds, n=30, seed=0).images, m.images)
    assert not torch.equal(multi_mnist(ds, n=30, seed=1).images, m.images)


def test_multi_mnist_errors():
    with pytest.raises(ValueError, match="at least two classes"):
        multi_mnist(ImageDataset(torch.rand(3, 1, 28, 28), torch.zeros(3)))
    with pytest.raises(ValueError, match=r"dataset labels must be class indices \(N,\); got \(3, 2\)"):
        multi_mnist(ImageDataset(torch.rand(3, 1, 28, 28), torch.zeros(3, 2)))


def test_multi_splits_pairs_digits_of_one_split_only():
    def part(classes, n):  # each split holds its own classes, so a pair's labels show where its digits came from
        x = torch.rand(n, 1, 28, 28)
        return ImageDataset(x, torch.tensor(classes).repeat(n // len(classes)), 9)

    base = Splits(part([0, 1, 2], 12), part([3, 4, 5], 6), part([6, 7, 8], 9))
    s = multi_splits(base, pairs_per_digit=4, seed=3)
    assert [len(p) for p in s] == [48, 6, 9]
    for p, classes in zip(s, ([0, 1, 2], [3, 4, 5], [6, 7, 8])):
        assert p.images.shape[1:] == (1, 36, 36) and p.labels.shape[1] == 9
        assert torch.equal(p.labels.sum(1), torch.full((len(p),), 2.0))
        assert set(p.labels.nonzero()[:, 1].tolist()) <= set(classes)
    assert torch.equal(s.test.images, multi_mnist(base.test, size=36, seed=3).images)
    assert torch.equal(multi_splits(base, pairs_per_digit=4, seed=3).train.images, s.train.images)
    with pytest.raises(ValueError, match="pairs_per_digit must be a positive integer; got 0"):
        multi_splits(base, pairs_per_digit=0)


def test_random_affine_rotates_about_the_centre_and_keeps_the_size():
    x = torch.zeros(2, 1, 21, 21)
    x[:, 0, 10, 10:15] = 1.0  # a bar pointing right from the centre
    g = torch.Generator().manual_seed(0)
    rot = random_affine(x, g, rotation=90)  # up to 90 degrees, its own angle per image
    assert rot.shape == x.shape and rot.min() >= 0 and rot.max() <= 1
    assert rot[:, 0, 10, 10].min() > 0.9  # the centre stays put
    assert not torch.allclose(rot[0], rot[1])  # each image its own map
    exact = random_affine(x, torch.Generator().manual_seed(0), rotation=0, scale=(1, 1))
    torch.testing.assert_close(exact, x, atol=1e-5, rtol=0)
    half = random_affine(x, torch.Generator().manual_seed(0), scale=(0.5, 0.5))
    assert half[:, 0, 10, 10:13].min() > 0.4 and half[:, 0, 10, 14].max() < 1e-6  # shrunk towards the centre
    torch.testing.assert_close(random_affine(x, torch.Generator().manual_seed(3), rotation=30),
                               random_affine(x, torch.Generator().manual_seed(3), rotation=30))
    with pytest.raises(ValueError, match=r"images must have shape \(N, C, H, W\); got \(21, 21\)"):
        random_affine(x[0, 0])


def test_affine_transform_is_random_affine_with_every_range_one_value():
    from dgl_capsules.data.affine import affine_transform, random_affine

    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(affine_transform(x, scale=0.8), random_affine(x, scale=(0.8, 0.8)))
    assert torch.equal(affine_transform(x), random_affine(x))
    dot = torch.zeros(1, 1, 9, 9)
    dot[0, 0, 4, 2] = 1  # row 4, column 2
    assert affine_transform(dot, translation=(3, 0))[0, 0].nonzero().tolist() == [[4, 5]]
    assert affine_transform(dot, translation=(0, -2))[0, 0].nonzero().tolist() == [[2, 2]]
    turned = affine_transform(dot, rotation=90)[0, 0]
    assert turned.max() > 0.99 and (turned > 0.01).nonzero().tolist() == [[2, 4]]  # left of the centre -> above it
