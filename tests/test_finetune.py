"""Fine-tuning from a trained checkpoint: charset extend/replace/keep with sensible new output rows,
a frozen CNN that really stays fixed, and a model that goes on learning."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from htrjand.charset import Charset
from htrjand.checkpoint import CheckpointError, atomic_save, model_checkpoint, read_checkpoint
from htrjand.cli import main
from htrjand.config import ConfigError, load_config
from htrjand.datasets import read_dataset
from htrjand.images import load_line, normalize_height, pad_batch, to_ink
from htrjand.metrics import cer
from htrjand.model import HTRNet, ModelConfig
from htrjand.recognition import load
from htrjand.runtime import DEFAULT_MODEL
from htrjand.training import train
from htrjand.training.finetune import Init
from htrjand.training.prune import channel_scores, narrow_state

from conftest import TINY_MODEL


def _config(data, output, model=None, **train_options):
    return load_config(preset_name="student", overrides={
        "data": {"train": [str(data)], "val": [str(data)], "batch_size": 8, "workers": 0, "augment": 0},
        "train": {"output": str(output), "warmup_steps": 10, "progress": False, "lr": 1e-2, "patience": 1000,
                  **train_options},
        "model": {**TINY_MODEL, **(model or {})}})


@pytest.fixture(scope="module")
def lines8(rendered, tmp_path_factory):
    out = tmp_path_factory.mktemp("lines8") / "lines8.tsv"
    out.write_text("".join(f"{s.image}\t{s.text}\n" for s in read_dataset(rendered["train"])[:8]), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def base(lines8, tmp_path_factory):
    """A tiny model that reads eight lines by heart (80 steps)."""
    out = tmp_path_factory.mktemp("base")
    train(_config(lines8, out, epochs=80, val_every=40))
    return out / "best.ckpt"


@pytest.mark.parametrize("mode", ["extend", "replace", "keep"])
def test_charset_modes_keep_old_rows_and_start_new_ones_at_the_mean(base, mode):
    old = Charset(read_checkpoint(base)["hyper_parameters"]["charset"])
    data = Charset(old.chars[3:] + ["§", "¤"])  # drops 3 characters, adds 2
    init = Init.load(str(base), mode, data)
    expected = {"extend": old.chars + ["§", "¤"], "replace": data.chars, "keep": old.chars}[mode]
    assert init.charset.chars == expected
    net = HTRNet(init.model, init.charset.num_classes)
    init.apply(net)
    w, b = init.state_dict["head.weight"], init.state_dict["head.bias"]
    assert torch.equal(net.head.weight[0], w[0])  # the CTC blank
    for i, c in enumerate(init.charset.chars, start=1):
        if c in old:
            j = old.chars.index(c) + 1
            assert torch.equal(net.head.weight[i], w[j]) and net.head.bias[i] == b[j]
        else:
            assert torch.allclose(net.head.weight[i], w[1:].mean(0)) and torch.isclose(net.head.bias[i], b[1:].mean())
    loaded = net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in init.state_dict.items() if not k.startswith("head."))


def test_finetuning_with_a_frozen_cnn_learns_a_new_character_and_leaves_the_cnn_alone(base, lines8, tmp_path):
    # the same lines with every 'e' written as '§': a character the base model has never produced
    samples = read_dataset(lines8)
    manifest = tmp_path / "new.tsv"
    manifest.write_text("".join(f"{s.image}\t{s.text.replace('e', '§')}\n" for s in samples), encoding="utf-8")
    truth = [s.text.replace("e", "§") for s in samples]
    before = cer(truth, [r.text for r in load(base).recognize([s.image for s in samples])])
    out = tmp_path / "ft"
    summary = train(_config(manifest, out, init=str(base), freeze_cnn=True, epochs=60, val_every=30))
    old, new = read_checkpoint(base), read_checkpoint(out / "last.ckpt")
    assert "§" in new["hyper_parameters"]["charset"]
    cnn = [k for k in old["state_dict"] if k.startswith("model.cnn.")]
    assert cnn and all(torch.equal(old["state_dict"][k], new["state_dict"][k]) for k in cnn)  # incl. BN statistics
    assert not torch.equal(old["state_dict"]["model.project.weight"], new["state_dict"]["model.project.weight"])
    assert new["hyper_parameters"]["htrjand"]["init"]["added"] == ["§"]
    results = load(out / "last.ckpt").recognize([s.image for s in samples])
    after = cer(truth, [r.text for r in results])
    assert sum(r.text.count("§") for r in results) >= sum(t.count("§") for t in truth) // 2
    assert after < before / 2, (before, after)
    assert summary["steps"] > 0


def _converted(base, **options):
    """`base`'s weights in the architecture `--init` builds with `options`, untrained (as a checkpoint)."""
    init = Init.load(str(base), "keep", Charset([]))
    net = HTRNet(init.architecture(options), init.charset.num_classes)
    init.apply(net)
    return model_checkpoint(net, init.charset.chars, "student")


def test_init_with_more_light_blocks_gives_the_faster_network_which_relearns(base, lines8, tmp_path):
    samples = read_dataset(lines8)
    images, truth = [s.image for s in samples], [s.text for s in samples]
    blocks = read_checkpoint(base)["hyper_parameters"]["model"]["light_blocks"] + 2
    atomic_save(_converted(base, light_blocks=blocks), tmp_path / "converted.ckpt", digest=True)
    converted = cer(truth, [r.text for r in load(tmp_path / "converted.ckpt").recognize(images)])
    out = tmp_path / "fast"
    train(_config(lines8, out, model={"light_blocks": blocks}, init=str(base), epochs=120, val_every=60))
    new = read_checkpoint(out / "last.ckpt")
    assert new["hyper_parameters"]["model"]["light_blocks"] == blocks
    after = cer(truth, [r.text for r in load(out / "last.ckpt").recognize(images)])
    assert converted > 0.3 and after < converted / 3, (converted, after)  # the change matters; training repairs it


def _padded(images):
    """`(images, widths)` tensors of line image files, as the network reads them."""
    lines = [to_ink(normalize_height(load_line(image), 64)) for image in images]
    return tuple(torch.from_numpy(a) for a in pad_batch(lines, 8))


def test_narrowing_keeps_the_used_channels_and_the_output(rendered):
    """Channels nothing reads (zeroed weights) score lowest; cutting them leaves the logits unchanged."""
    torch.manual_seed(0)
    config = ModelConfig(**{**TINY_MODEL, "channels": (8, 12, 16, 16, 16, 16)})
    net = HTRNet(config, 20).eval()
    narrow = (4, 8, 8, 12, 16, 8)
    with torch.no_grad():
        for i, (block, width) in enumerate(zip(net.cnn, narrow)):
            block.norm.running_mean.uniform_(-0.5, 0.5)  # non-trivial statistics, kept per channel
            block.gated.conv.weight[:, width:] = 0  # inner channels >= width are never read
            reader = net.cnn[i + 1].conv.weight if i + 1 < len(net.cnn) else None
            dead = torch.arange(config.channels[i]) % 2 == 1  # every other outer channel is never read
            dead[: max(0, 2 * width - config.channels[i])] = False
            if reader is not None:
                reader[:, dead] = 0
            else:
                net.project.weight.view(net.project.weight.shape[0], config.channels[i], -1)[:, dead] = 0
            block.se.fc1.weight[:, dead] = 0
    images, widths = _padded([s.image for s in read_dataset(rendered["train"])[:4]])
    scores = channel_scores(net, [(images, widths)])
    small = HTRNet(replace(config, channels=narrow), 20).eval()
    small.load_state_dict(narrow_state(net.state_dict(), config, small.config, scores))
    with torch.no_grad():
        (before, lengths), (after, lengths_after) = net(images, widths), small(images, widths)
    assert torch.equal(lengths, lengths_after)
    assert torch.allclose(before, after, atol=1e-5), (before - after).abs().max()
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in net.parameters())


def test_init_with_narrower_channels_prunes_and_learns_faster_than_from_scratch(base, lines8, tmp_path):
    samples = read_dataset(lines8)
    images, truth = [s.image for s in samples], [s.text for s in samples]
    old = read_checkpoint(base)["hyper_parameters"]["model"]["channels"]
    narrow = [8, 8, 8, 16, 12, 8]
    errors = {}
    for name, init in (("pruned", str(base)), ("scratch", "")):
        train(_config(lines8, tmp_path / name, model={"channels": narrow}, init=init, epochs=40, val_every=40))
        errors[name] = cer(truth, [r.text for r in load(tmp_path / name / "last.ckpt").recognize(images)])
    new = read_checkpoint(tmp_path / "pruned" / "last.ckpt")["hyper_parameters"]
    assert list(new["model"]["channels"]) == narrow
    assert new["htrjand"]["init"]["narrowed_channels"] == [list(old), narrow]
    assert errors["pruned"] < 0.5 and errors["pruned"] < errors["scratch"] / 2, errors  # the kept weights count


def test_init_with_a_wider_feed_forward_keeps_the_output_then_trains_the_new_units(base, lines8, tmp_path):
    samples = read_dataset(lines8)
    images, truth = [s.image for s in samples], [s.text for s in samples]
    before = cer(truth, [r.text for r in load(base).recognize(images)])
    init = Init.load(str(base), "keep", Charset([]))
    old = HTRNet(init.model, init.charset.num_classes).eval()
    old.load_state_dict(init.state_dict)
    wide = HTRNet(init.architecture({"ffn_mult": init.model.ffn_mult + 2}), init.charset.num_classes).eval()
    init.apply(wide)
    batch, widths = _padded(images)
    with torch.no_grad():
        assert torch.allclose(old(batch, widths)[0], wide(batch, widths)[0], atol=1e-6)  # the same function
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in old.parameters())
    out = tmp_path / "wide"
    train(_config(lines8, out, model={"ffn_mult": init.model.ffn_mult + 2}, init=str(base), epochs=20, val_every=20, lr=1e-3))
    new = read_checkpoint(out / "last.ckpt")
    assert new["hyper_parameters"]["htrjand"]["init"]["widened_ffn"] == [init.model.ffn_mult, init.model.ffn_mult + 2]
    hidden = init.model.ffn_mult * init.model.d_model
    assert new["state_dict"]["model.blocks.0.ffn.3.weight"][:, hidden:].abs().sum() > 0  # the new units took part
    after = cer(truth, [r.text for r in load(out / "last.ckpt").recognize(images)])
    assert after < before - 0.05, (before, after)  # and the widened network went on learning


def test_init_with_options_that_change_weight_shapes_is_a_clear_error(base, lines8, tmp_path):
    with pytest.raises(ConfigError, match=r"--init .*channels=.*do not fit its weights \(cnn\.5"):
        train(_config(lines8, tmp_path / "x", model={"channels": [8, 12, 16, 16, 16, 24]}, init=str(base)))
    yaml = tmp_path / "run.yaml"
    yaml.write_text("model:\n  dropout: 0.3\n", encoding="utf-8")
    cfg = load_config(yaml, {"model": {"light-blocks": 3}}, "student")
    assert cfg.model_given == ("dropout", "light_blocks")  # the preset's own values are not "given"


def test_bundled_model_is_a_valid_starting_point():
    init = Init.load("bundled", "extend", Charset(["a", "b", "✓"]))
    assert init.path == DEFAULT_MODEL and init.charset.chars[-1] == "✓"


def test_bad_init_gives_clear_errors(rendered, tmp_path, capsys):
    with pytest.raises(CheckpointError, match="not found"):
        Init.load(str(tmp_path / "missing.ckpt"), "extend", Charset(["a"]))
    with pytest.raises(ConfigError, match="charset_mode"):
        Init.load("bundled", "merge", Charset(["a"]))
    code = main(["train", "--train", str(rendered["train"]), "--val", str(rendered["val"]),
                 "--init", str(tmp_path / "missing.ckpt"), "--output", str(tmp_path / "x")])
    assert code == 2 and "missing.ckpt" in capsys.readouterr().err
