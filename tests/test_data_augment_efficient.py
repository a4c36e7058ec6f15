"""The efficient-capsnet augmentation: each part on hand-made images, the draws' ranges and the whole pipeline."""
import math

import pytest
import torch

from dgl_capsules.data import get_augmentation, list_augmentations
from dgl_capsules.data import augment as A
from dgl_capsules.data.augment import efficient_capsnet_augment


def digits(n=32, seed=0):
    """Digit-like 28x28 images: a few bright strokes away from the border, background exactly 0."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, 28, 28)
    for i in range(n):
        r, c = torch.randint(5, 12, (2,), generator=g).tolist()
        h, w = torch.randint(6, 12, (2,), generator=g).tolist()
        x[i, 0, r:r + h, c:c + 2] = 1.0
        x[i, 0, r:r + 2, c:c + w] = 0.6
    return x


def test_registered_under_its_name():
    assert "efficient-capsnet" in list_augmentations()
    assert get_augmentation("efficient-capsnet") is efficient_capsnet_augment


def test_shapes_dtypes_and_determinism():
    x = digits()
    a = efficient_capsnet_augment(x, torch.Generator().manual_seed(3))
    b = efficient_capsnet_augment(x, torch.Generator().manual_seed(3))
    c = efficient_capsnet_augment(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and a.dtype == x.dtype and torch.equal(a, b) and not torch.equal(a, c)
    assert efficient_capsnet_augment(x.double(), torch.Generator().manual_seed(3)).dtype == torch.float64
    assert efficient_capsnet_augment(x[:0]).shape == (0, 1, 28, 28)
    assert efficient_capsnet_augment(torch.zeros(2, 3, 40, 36)).shape == (2, 3, 40, 36)


def test_values_stay_near_the_unit_interval_and_the_mass_is_kept_roughly():
    x = digits(256)
    y = efficient_capsnet_augment(x, torch.Generator().manual_seed(0))
    # only the Lanczos squish leaves [0, 1]: by at most its weights' negative and positive sums for inputs in [0, 1]
    maps = A._squish_matrices(28)[1:8]
    low, high = maps.clamp(max=0).sum(-2).min().item(), maps.clamp(min=0).sum(-2).max().item()
    assert -0.28 < low < -0.27 and 1.27 < high < 1.28
    assert low <= y.min() < 0 and 1 < y.max() <= high
    ratio = y.sum((1, 2, 3)) / x.sum((1, 2, 3))
    assert ratio.min() > 0.3 and ratio.max() < 1.05  # the squish narrows, the patch erases, nothing adds ink


def test_the_draws_have_the_published_ranges_and_frequencies():
    p = A._draw(200_000, 28, 28, torch.Generator().manual_seed(0))
    angle, width, offset = p["angle"], p["width_mod"], p["offset_mod"]
    assert angle.min() >= -29 and angle.max() <= 29 and angle.dtype == torch.int64
    normal = torch.distributions.Normal(0.0, 0.33)

    def prob_abs_below(t):  # P(|r| < t) for r ~ N(0, 0.33)
        return (2 * normal.cdf(torch.tensor(t)) - 1).item()

    assert (angle == 0).float().mean().item() == pytest.approx(prob_abs_below(1 / 30), abs=0.005)  # int() truncates
    assert p["rotate"].float().mean().item() == pytest.approx(0.5, abs=0.005)
    assert sorted(width.unique().tolist()) == [1, 2, 3, 4, 5, 6, 7]
    assert (width == 1).float().mean().item() == pytest.approx(prob_abs_below(1 / 7), abs=0.005)
    assert sorted(offset.unique().tolist()) == [0, 1]
    assert (offset == 1).float().mean().item() == pytest.approx(1 - prob_abs_below(0.5), abs=0.005)
    for corner in (p["erase_row"], p["erase_col"]):
        assert sorted(corner.unique().tolist()) == list(range(4, 23))
    assert p["direction"].float().mean().item() == pytest.approx(0.5, abs=0.005)
    assert p["amount"].min() >= 0 and p["amount"].max() <= 0.9999


def test_rotation_turns_counter_clockwise_about_14_14():
    x = torch.zeros(3, 1, 28, 28)
    x[:, 0, 14, 19] = 1.0  # five pixels right of the centre (row 14, column 14)
    y = A._rotate(x, torch.tensor([90, -90, 0]))
    assert y[0, 0, 9, 14].item() == pytest.approx(1.0, abs=1e-5)  # up: counter-clockwise on screen
    assert y[1, 0, 19, 14].item() == pytest.approx(1.0, abs=1e-5)  # down
    assert torch.allclose(y[2], x[2], atol=1e-6)
    assert torch.allclose(y.sum((1, 2, 3)), torch.ones(3), atol=1e-4)
    z = A._rotate(x[:1], torch.tensor([30]))[0, 0]  # lands between pixels: (row 11.5, column 18.33)
    col, row = 14 + 5 * math.cos(math.radians(30)), 14 - 5 * math.sin(math.radians(30))
    lit = (z > 1e-6).nonzero().tolist()
    assert all(11 <= r <= 12 and 17 <= c <= 19 for r, c in lit) and 18 < col < 19 and row == 11.5
    # output pixel (row 11, column 18) reads the input at the inverse rotation of its offset (4, -3) from the centre
    c30, s30 = math.cos(math.radians(30)), math.sin(math.radians(30))
    src_x, src_y = 14 + c30 * 4 + s30 * 3, 14 + s30 * 4 - c30 * 3
    assert z[11, 18].item() == pytest.approx((1 - abs(19 - src_x)) * (1 - abs(14 - src_y)), abs=1e-5)
    assert z.argmax().item() == 11 * 28 + 18


def test_only_about_half_the_images_are_rotated_and_by_whole_degrees():
    x = digits(1, seed=1).expand(400, -1, -1, -1).contiguous()
    gen = torch.Generator().manual_seed(5)
    p = A._draw(400, 28, 28, torch.Generator().manual_seed(5))
    # rebuild the pipeline from the same draws: it must be the augmentation itself
    want = torch.where(p["rotate"][:, None, None, None], A._rotate(x, p["angle"]), x)
    want = A._roll(want, *A._shift_amounts(want, p["direction"], p["amount"]))
    want = A._erase(A._squish(want, p["width_mod"], p["offset_mod"]), p["erase_row"], p["erase_col"])
    torch.testing.assert_close(efficient_capsnet_augment(x, gen), want, rtol=0, atol=0)
    assert 0.4 < p["rotate"].float().mean() < 0.6


def test_shift_moves_a_fraction_of_the_margin_and_never_out_of_the_frame():
    x = torch.zeros(4, 1, 28, 28)
    x[:, 0, 6:10, 10:14] = 1.0  # margins: left 10, right 14, top 6, bottom 18
    assert [m.tolist() for m in A._margins(x)] == [[10] * 4, [14] * 4, [6] * 4, [18] * 4]
    direction = torch.tensor([[0, 1, 0, 0], [0, 1, 1, 0]])  # (y side, x side): 0 = up / left, 1 = down / right
    amount = torch.tensor([[0.5, 0.5, 0.9999, 0.0], [0.5, 0.5, 0.0, 0.9999]], dtype=torch.float64)  # (x, y)
    dx, dy = A._shift_amounts(x, direction, amount)
    assert dx.tolist() == [-5, 7, 14, 0]  # floor(-0.5 * 10), floor(0.5 * 15), floor(0.9999 * 15) = 14 = right
    assert dy.tolist() == [-3, 9, 0, -6]  # floor(-0.5 * 6), floor(0.5 * 19), 0, floor(-0.9999 * 6) = -6 = top
    y = A._roll(x, dx, dy)
    assert torch.equal(y[0, 0, 3:7, 5:9], torch.ones(4, 4)) and y.sum().item() == 4 * 16
    assert torch.equal(y[2, 0, 6:10, 24:28], torch.ones(4, 4))  # flush with the right edge, nothing wrapped
    assert torch.equal(y[3, 0, 0:4, 10:14], torch.ones(4, 4))  # flush with the top
    # random draws on many images: every shifted digit keeps all its pixels (the roll never wraps a stroke)
    z = digits(64)
    p = A._draw(64, 28, 28, torch.Generator().manual_seed(1))
    shifted = A._roll(z, *A._shift_amounts(z, p["direction"], p["amount"]))
    torch.testing.assert_close(shifted.sum((1, 2, 3)), z.sum((1, 2, 3)))


def tf_lanczos3_columns(n_in, n_out):
    """TensorFlow's antialiased Lanczos-3 resampling weights (n_out, n_in), one output pixel at a time."""
    scale = n_out / n_in
    k = max(1 / scale, 1.0)
    rows = []
    for x in range(n_out):
        sample = (x + 0.5) / scale
        start = max(0, min(n_in - 1, math.ceil(sample - 3 * k - 0.5)))
        end = max(0, min(n_in - 1, math.floor(sample + 3 * k - 0.5))) + 1
        row = [0.0] * n_in
        for s in range(start, end):
            t = abs((s + 0.5 - sample) / k)
            row[s] = 1.0 if t <= 1e-3 else (0.0 if t > 3 else
                                             3 * math.sin(math.pi * t) * math.sin(math.pi * t / 3) / (math.pi * t) ** 2)
        total = sum(row)
        rows.append([v / total for v in row])
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("width_mod", [1, 4, 7])
@pytest.mark.parametrize("offset_mod", [0, 1])
def test_squish_is_tensorflows_lanczos3_resize_placed_as_published(width_mod, offset_mod):
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    y = A._squish(x, torch.tensor([width_mod] * 2), torch.tensor([offset_mod] * 2))
    narrow = 28 - width_mod
    place = width_mod // 2 + offset_mod
    resized = x @ tf_lanczos3_columns(28, narrow).t()  # (2, 1, 28, narrow)
    torch.testing.assert_close(y[..., place:place + narrow], resized, rtol=1e-12, atol=1e-12)
    assert (y[..., :place] == 0).all() and (y[..., place + narrow:] == 0).all()


def test_squish_of_a_flat_image_is_flat_where_it_lands_and_a_centred_bar_stays_centred():
    ones = torch.ones(1, 1, 28, 28)
    y = A._squish(ones, torch.tensor([6]), torch.tensor([0]))
    assert torch.allclose(y[..., 3:25], torch.ones(1, 1, 28, 22), atol=1e-6) and y[..., :3].abs().max() == 0
    bar = torch.zeros(1, 1, 28, 28)
    bar[..., 12:16] = 1.0  # symmetric about the middle of the image
    y = A._squish(bar, torch.tensor([6]), torch.tensor([0]))[0, 0, 0, 3:25]  # the 22 resized columns
    torch.testing.assert_close(y, y.flip(0), rtol=0, atol=1e-6)


def test_erase_zeroes_one_4x4_patch_at_its_corner():
    x = torch.ones(3, 2, 28, 28)
    y = A._erase(x, torch.tensor([4, 22, 10]), torch.tensor([22, 4, 10]))
    assert ((y == 0).sum((1, 2, 3)) == 2 * 16).all()
    assert (y[0, :, 4:8, 22:26] == 0).all() and (y[1, :, 22:26, 4:8] == 0).all() and (y[2, :, 10:14, 10:14] == 0).all()


def test_every_augmented_image_has_its_erased_patch():
    x = torch.ones(64, 1, 28, 28) * 0  # patch on a flat background: draw where, then check inside the digit
    x[:, :, 2:26, 2:26] = 1.0
    p = A._draw(64, 28, 28, torch.Generator().manual_seed(9))
    y = efficient_capsnet_augment(x, torch.Generator().manual_seed(9))
    for i in range(64):
        r, c = p["erase_row"][i], p["erase_col"][i]
        assert (y[i, 0, r:r + 4, c:c + 4] == 0).all()


def test_bad_images_are_named():
    with pytest.raises(TypeError, match=r"images must be a floating-point tensor of shape \(N, C, H, W\)"):
        efficient_capsnet_augment(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"images must have shape \(N, C, H, W\); got \(28, 28\)"):
        efficient_capsnet_augment(torch.zeros(28, 28))
    with pytest.raises(ValueError, match="images must be at least 10x10 for the efficient-capsnet augmentation; "
                                         "got 8x28"):
        efficient_capsnet_augment(torch.zeros(2, 1, 8, 28))
