import pytest
import torch

from htrjand.model import HTRNet, ModelConfig, count_parameters, preset
from htrjand.model.attention import CombinedAttention, ProximaAttention
from htrjand.model.layers import FullGatedConv2d, GatedConvBlock, SqueezeExcite, width_mask

CHARSET_SIZE = 150  # about the merged copiste + hooker charset


def test_preset_parameter_counts():
    teacher = count_parameters(HTRNet(preset("teacher"), CHARSET_SIZE + 1))
    student = count_parameters(HTRNet(preset("student"), CHARSET_SIZE + 1))
    assert 1.3e6 <= teacher <= 1.7e6
    assert student <= 0.75e6
    assert student <= 0.52 * teacher
    assert preset("teacher").width_stride == preset("student").width_stride == 8


def test_gated_conv_is_linear_half_times_sigmoid_half():
    layer = FullGatedConv2d(3)
    x = torch.randn(2, 3, 5, 7)
    raw = layer.conv(x)
    expected = raw[:, :3] * torch.sigmoid(raw[:, 3:])
    assert torch.allclose(layer(x), expected)
    # the gate really gates: a very negative gate bias closes it
    with torch.no_grad():
        layer.conv.bias[3:] = -100.0
    assert layer(x).abs().max() < 1e-6


def test_se_pooling_ignores_padding():
    se = SqueezeExcite(8, reduction=2)
    x = torch.rand(1, 8, 4, 10)
    mask = width_mask(torch.tensor([6]), 10)
    out_short = se(x[..., :6], width_mask(torch.tensor([6]), 6))
    out_padded = se(x * mask, mask)
    assert torch.allclose(out_short, out_padded[..., :6], atol=1e-6)
    # it really re-weights channels (not the identity)
    assert not torch.allclose(out_short, x[..., :6])


def test_proxima_bias_penalises_distance_per_head():
    attn = ProximaAttention(16, heads=2, sigma_init=(1.0, 4.0))
    bias = attn.logit_bias(6, torch.zeros(1, 6, 16))[0]
    assert bias.shape == (2, 6, 6)
    assert torch.allclose(bias[:, 2, 2], torch.zeros(2))
    # farther is more penalised, and the narrow head penalises more than the wide head
    assert (bias[0, 0, 1] > bias[0, 0, 3]) and (bias[1, 0, 3] > bias[0, 0, 3])
    assert torch.allclose(bias[0, 0, 1], (-1 / (2 * attn.sigma[0] ** 2)).detach(), atol=1e-5)
    windowed = ProximaAttention(16, heads=2, window=1).logit_bias(6, torch.zeros(1, 6, 16))[0]
    assert windowed[0, 0, 3] < -1e30


def test_proxima_attends_locally_when_content_is_neutral():
    attn = ProximaAttention(4, heads=1, sigma_init=(1.0, 1.0)).eval()
    with torch.no_grad():
        attn.qkv.weight.zero_()
        attn.qkv.bias.zero_()
        attn.qkv.weight[8:, :] = torch.eye(4)  # v = x, q = k = 0: weights come from the bias alone
        attn.out.weight.copy_(torch.eye(4))
        attn.out.bias.zero_()
    x = torch.zeros(1, 9, 4)
    x[0, 4, 0] = 1.0  # a single spike at frame 4
    y = attn(x, torch.ones(1, 9, dtype=torch.bool))[0, :, 0]
    assert y.argmax() == 4 and y[3] > y[1] and y[5] > y[7]


@pytest.mark.parametrize("kind,fusion", [("combined", "gate"), ("combined", "scalar"), ("combined", "concat"),
                                         ("mhsa", "gate"), ("proxima", "gate")])
def test_attention_ignores_padded_keys(kind, fusion):
    attn = CombinedAttention(16, 2, kind=kind, fusion=fusion).eval()
    x = torch.randn(1, 7, 16)
    mask = torch.tensor([[True] * 5 + [False] * 2])
    garbage = x.clone()
    garbage[0, 5:] = 1000.0
    assert torch.allclose(attn(x, mask)[0, :5], attn(garbage, mask)[0, :5], atol=1e-5)
    assert torch.allclose(attn(x, mask)[0, :5], attn(x[:, :5], mask[:, :5])[0], atol=1e-5)


@pytest.mark.parametrize("name", ["teacher", "student"])
def test_padding_does_not_change_the_real_part(name):
    torch.manual_seed(0)
    model = HTRNet(preset(name), 40).eval()
    short = torch.rand(1, 1, 64, 96)
    long = torch.rand(1, 1, 64, 200)
    batch = torch.zeros(2, 1, 64, 200)
    batch[0, :, :, :96] = short
    batch[1] = long
    with torch.no_grad():
        alone, n_alone = model(short, torch.tensor([96]))
        together, lengths = model(batch, torch.tensor([96, 200]))
    assert lengths.tolist() == [12, 25] and n_alone.tolist() == [12]
    assert torch.allclose(alone[0], together[0, :12], atol=1e-4)


def test_light_first_block_halves_resolution_before_the_gated_conv():
    block = GatedConvBlock(1, 8, (2, 2), stem=True)
    x, widths = block(torch.rand(2, 1, 64, 40), torch.tensor([40, 24]))
    assert x.shape == (2, 8, 32, 20) and widths.tolist() == [20, 12]
    assert x[1, :, :, 12:].abs().max() == 0  # padding stays zero
    light = HTRNet(preset("student", light_blocks=2), 20)
    assert [b.stem for b in light.cnn] == [True, True, False, False, False, False]
    full = HTRNet(preset("student", light_blocks=0), 20)
    assert count_parameters(light) == count_parameters(full)
    x = torch.rand(1, 1, 64, 96)
    assert light(x, torch.tensor([96]))[0].shape == full(x, torch.tensor([96]))[0].shape


def test_model_config_roundtrip_and_errors():
    cfg = preset("student", blocks=2)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    old = {k: v for k, v in cfg.to_dict().items() if k != "light_blocks"}  # a checkpoint from before light_blocks
    assert ModelConfig.from_dict({**old, "light_first_block": False}).light_blocks == 0
    with pytest.raises(ValueError, match="unknown model options"):
        ModelConfig.from_dict({"channelz": [1]})
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


def test_gradients_reach_every_parameter():
    model = HTRNet(preset("student"), 20)
    logits, _ = model(torch.rand(2, 1, 64, 64), torch.tensor([64, 48]))
    logits.logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing
