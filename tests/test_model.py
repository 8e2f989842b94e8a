"""The UNet recipes, the spatial normalization layer and the Bhattacharyya loss."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from vcorner.network.loss import bhattacharyya, bhattacharyya_loss  # noqa: E402
from vcorner.network.normalization import SpatialNormalization  # noqa: E402
from vcorner.network.unet import UNet, count_parameters, create_model  # noqa: E402

PAPER_PARAMETERS = 24_237_633


def conv_layers(model: torch.nn.Module) -> int:
    return sum(type(m) is torch.nn.Conv2d for m in model.modules())


def test_paper_recipe_matches_the_paper():
    model = create_model("paper")
    assert conv_layers(model) == 19
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 1  # shared, applied 4 times
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in model.modules()) == 4
    assert abs(count_parameters(model) - PAPER_PARAMETERS) / PAPER_PARAMETERS < 0.05


def test_lite_recipe_has_the_same_topology_and_is_narrow():
    lite = create_model("lite")
    assert conv_layers(lite) == 19
    assert count_parameters(lite) < count_parameters(create_model("paper")) / 10


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_unet_outputs_probability_maps(padding_mode):
    torch.manual_seed(1)
    model = create_model("tiny", padding_mode=padding_mode).eval()
    maps = model(torch.randn(3, 1, 64, 64))
    assert maps.shape == (3, 1, 64, 64) and maps.dtype == torch.float32
    assert torch.all(maps >= 0)
    torch.testing.assert_close(maps.sum(dim=(2, 3)), torch.ones(3, 1))


def test_unet_checks_its_arguments():
    with pytest.raises(ValueError, match="widths"):
        UNet(widths=(8,))
    with pytest.raises(ValueError, match="padding_mode"):
        UNet(widths=(4, 8), padding_mode="circle")


def test_spatial_normalization_is_fp32_min_zero_sum_one():
    a = torch.randn(2, 1, 8, 8, dtype=torch.float16) * 100
    p = SpatialNormalization()(a)
    assert p.dtype == torch.float32
    torch.testing.assert_close(p.amin(dim=(2, 3)), torch.zeros(2, 1))
    torch.testing.assert_close(p.sum(dim=(2, 3)), torch.ones(2, 1))


def test_bhattacharyya_of_known_maps():
    y = torch.zeros(1, 1, 4, 4)
    y[0, 0, 0, :2] = 0.5
    assert float(bhattacharyya(y, y)) == pytest.approx(1.0, abs=1e-5)
    p = torch.zeros(1, 1, 4, 4)
    p[0, 0, 0, 0], p[0, 0, 3, 3] = 0.5, 0.5  # overlaps y on one pixel: BC = sqrt(0.5 * 0.5)
    assert float(bhattacharyya(y, p)) == pytest.approx(0.5, abs=1e-5)
    p2 = torch.zeros(1, 1, 4, 4)
    p2[0, 0, 3, :] = 0.25
    assert float(bhattacharyya(y, p2)) == pytest.approx(0.0, abs=1e-4)


def test_loss_gradient_is_finite_where_prediction_is_zero():
    y = torch.full((1, 1, 4, 4), 1 / 16)
    p = torch.zeros(1, 1, 4, 4, requires_grad=True)
    bhattacharyya_loss(y, p).backward()
    assert torch.all(torch.isfinite(p.grad)) and torch.all(p.grad < 0)  # pushes P up where y > 0
    q = torch.full((1, 1, 4, 4), 1 / 16, requires_grad=True)
    y0 = torch.zeros(1, 1, 4, 4)
    y0[0, 0, 0, 0] = 1
    bhattacharyya_loss(y0, q).backward()
    assert torch.all(q.grad.flatten()[1:] == 0)  # no gradient where y = 0


def test_background_mass_counts_probability_outside_the_ground_truth():
    from vcorner.network.loss import background_mass

    y = torch.zeros(1, 1, 4, 4)
    y[0, 0, 0, 0] = 1.0
    p = torch.full((1, 1, 4, 4), 1 / 16)
    assert float(background_mass(y, p)) == pytest.approx(15 / 16)
    assert float(background_mass(y, y)) == 0.0
