"""Tests of cslearn.models: the SegOutput contract for every registered model, the incremental
classifier, freezing, checkpoint round trips, and the DeepLab-V3 details (dilations, ASPP rates,
pre-activations, ImageNet weights without downloading)."""
from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
import torchvision

from cslearn.models import MODELS, SegOutput, Segmenter, build_model
from cslearn.models.deeplab import resnet_weights
from cslearn.models.output import predicted_labels

CLASSES = [3, 2]
SIZE = 32  # small inputs keep the ResNet tests fast: 2x2 (OS16) or 4x4 (OS8) feature maps
BODY_CHANNELS = {"deeplabv3_resnet101": 2048, "deeplabv3_resnet50": 2048, "tiny": 128}
HEAD_CHANNELS = {"deeplabv3_resnet101": 256, "deeplabv3_resnet50": 256, "tiny": 64}


def _output_stride(name: str, output_stride: int) -> int:
    return 4 if name == "tiny" else output_stride


@functools.lru_cache(maxsize=None)
def _cached(name: str, output_stride: int = 16) -> Segmenter:
    torch.manual_seed(0)
    return build_model(name, CLASSES, output_stride=output_stride)


def fresh(name: str, output_stride: int = 16) -> Segmenter:
    """A private copy of a cached model (building ResNets is the slow part of these tests)."""
    return copy.deepcopy(_cached(name, output_stride))


def images(batch: int = 2, size: int = SIZE) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))  # (B, 3, H, W)


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_output_contract(name: str, output_stride: int) -> None:
    model = _cached(name, output_stride).train()
    with torch.no_grad():
        out = model(images())
    assert isinstance(out, SegOutput)
    low = SIZE // _output_stride(name, output_stride)
    assert out.logits.shape == (2, sum(CLASSES), SIZE, SIZE)
    assert out.features["body"].shape == (2, BODY_CHANNELS[name], low, low)
    assert out.features["pre_logits"].shape == (2, HEAD_CHANNELS[name], low, low)
    assert out.features["logits_low"].shape == (2, sum(CLASSES), low, low)
    expected = F.interpolate(out.features["logits_low"], size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out.logits, expected)  # upsampled per step: equal up to rounding
    assert model.classes_per_step == CLASSES and model.num_classes == 5


@pytest.mark.parametrize("name", ["tiny", "deeplabv3_resnet50"])
def test_odd_input_size_is_upsampled_to_input(name: str) -> None:
    model = _cached(name).eval()
    with torch.no_grad():
        out = model(images(batch=1, size=SIZE + 1))
    assert out.logits.shape == (1, 5, SIZE + 1, SIZE + 1)


@pytest.mark.parametrize("name", ["tiny", "deeplabv3_resnet50"])
def test_add_classes_keeps_old_logits_bit_identical(name: str) -> None:
    model = fresh(name).eval()
    with torch.no_grad():
        before = model(images())
        classifier = model.add_classes(4)
        after = model(images())
    assert classifier is model.classifiers[-1] and classifier.out_channels == 4
    assert model.classes_per_step == [3, 2, 4] and model.num_classes == 9
    assert after.logits.shape[1] == 9 and after.features["logits_low"].shape[1] == 9
    assert torch.equal(after.features["logits_low"][:, :5], before.features["logits_low"])
    assert torch.equal(after.logits[:, :5], before.logits)


def test_add_classes_follows_device_and_dtype() -> None:
    model = fresh("tiny").double()
    classifier = model.add_classes(2)
    assert classifier.weight.dtype == torch.float64 and classifier.weight.requires_grad
    assert model(images().double()).logits.shape == (2, 7, SIZE, SIZE)


@pytest.mark.parametrize("counts", [[], [3, 0], [-1]])
def test_segmenter_rejects_bad_class_counts(counts: list[int]) -> None:
    with pytest.raises(ValueError, match="classes_per_step"):
        build_model("tiny", counts)
    with pytest.raises(ValueError, match="num_new"):
        build_model("tiny", [3]).add_classes(0)


@pytest.mark.parametrize("name", ["tiny", "deeplabv3_resnet50"])
def test_freeze_deepcopy_gives_an_independent_frozen_teacher(name: str) -> None:
    model = fresh(name).train()
    old_model = copy.deepcopy(model).freeze()
    assert isinstance(old_model, Segmenter)
    assert not any(module.training for module in old_model.modules())
    assert not any(parameter.requires_grad for parameter in old_model.parameters())
    assert model.training and all(parameter.requires_grad for parameter in model.parameters())
    out = old_model(images(batch=1))  # eval-mode BN (running statistics) accepts a batch of one
    assert out.logits.grad_fn is None
    with torch.no_grad():  # the copy owns its tensors: changing the live model leaves it alone
        model.classifiers[0].bias.add_(1.0)
    assert not torch.equal(model.classifiers[0].bias, old_model.classifiers[0].bias)


@pytest.mark.parametrize("name", ["tiny", "deeplabv3_resnet50"])
def test_state_dict_round_trip_is_strict(name: str) -> None:
    source = fresh(name).train()
    with torch.no_grad():
        source(images())  # moves the BN running statistics away from their initial values
    target = build_model(name, CLASSES)
    target.load_state_dict(source.state_dict(), strict=True)
    source.eval(), target.eval()
    with torch.no_grad():
        assert torch.equal(source(images()).logits, target(images()).logits)


def test_strict_loading_needs_the_same_classes_per_step() -> None:
    grown = build_model("tiny", [3])
    grown.add_classes(2)
    build_model("tiny", [3, 2]).load_state_dict(grown.state_dict(), strict=True)
    with pytest.raises(RuntimeError, match="classifiers.1"):
        build_model("tiny", [3]).load_state_dict(grown.state_dict(), strict=True)


def test_unknown_model_name_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="deeplabv3_resnet101.*deeplabv3_resnet50.*tiny"):
        build_model("resnet18", CLASSES)


def test_tiny_has_no_pretrained_weights() -> None:
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_model("tiny", CLASSES, weights="imagenet")


@pytest.mark.parametrize("output_stride", [16, 8])
def test_resnet_preactivations_match_the_torchvision_stages(output_stride: int) -> None:
    model = _cached("deeplabv3_resnet50", output_stride).eval()
    backbone = model.backbone
    with torch.no_grad():
        features = model(images()).features
        x = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(images()))))
        for index, stage in enumerate([backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4], 1):
            x = stage(x)  # torchvision's own Bottleneck.forward
            assert torch.equal(torch.relu(features[f"stage{index}_preact"]), x)
            assert (features[f"stage{index}_preact"] < 0).any()  # really taken before the ReLU
    assert torch.equal(features["body"], x)


def test_resnet_without_preactivations_gives_the_same_body() -> None:
    model = _cached("deeplabv3_resnet50").eval()
    with torch.no_grad():
        reference = model(images()).features
        model.backbone.with_preactivations = False
        try:
            features = model(images()).features
        finally:
            model.backbone.with_preactivations = True
    assert not any(key.endswith("_preact") for key in features)
    assert torch.equal(features["body"], reference["body"])


def test_tiny_preactivations() -> None:
    model = _cached("tiny").eval()
    with torch.no_grad():
        features = model(images()).features
    assert sorted(key for key in features if key.endswith("_preact")) == [f"stage{k}_preact" for k in (1, 2, 3)]
    assert torch.equal(torch.relu(features["stage3_preact"]), features["body"])


@pytest.mark.parametrize(
    "output_stride, layer3, layer4, aspp",
    [(16, [1, 1], [1, 2], [1, 6, 12, 18]), (8, [1, 2], [2, 4], [1, 12, 24, 36])],
)
def test_dilations(output_stride: int, layer3: list[int], layer4: list[int], aspp: list[int]) -> None:
    model = _cached("deeplabv3_resnet50", output_stride)
    backbone = model.backbone
    # torchvision dilates from the second block of a stage on; the first keeps the previous rate
    for stage, (first, rest) in [(backbone.layer3, layer3), (backbone.layer4, layer4)]:
        assert stage[0].conv2.dilation == (first, first)
        assert all(block.conv2.dilation == (rest, rest) for block in stage[1:])
    assert backbone.layer2[0].conv2.stride == (2, 2)
    assert backbone.layer3[0].conv2.stride == ((2, 2) if output_stride == 16 else (1, 1))
    assert backbone.layer4[0].conv2.stride == (1, 1)
    assert [conv.dilation[0] for conv in model.head.map_convs] == aspp
    assert [conv.padding[0] for conv in model.head.map_convs] == [0] + aspp[1:]


def test_aspp_keys_follow_the_mib_head() -> None:
    modules = {key.rsplit(".", 1)[0] for key in _cached("deeplabv3_resnet50").head.state_dict()}
    assert modules == {"map_convs.0", "map_convs.1", "map_convs.2", "map_convs.3", "map_bn", "red_conv",
                       "global_pooling_conv", "global_pooling_bn", "pool_red_conv", "red_bn"}


def test_aspp_dilations_can_reproduce_the_reference_quirk() -> None:
    model = build_model("deeplabv3_resnet50", CLASSES, output_stride=8, aspp_dilations=(12, 24, 32))
    assert [conv.dilation[0] for conv in model.head.map_convs] == [1, 12, 24, 32]


@pytest.mark.parametrize("depth", [50, 101])
def test_imagenet_weights_are_torchvision_v1_without_download(depth: int, monkeypatch: pytest.MonkeyPatch) -> None:
    enum = {50: torchvision.models.ResNet50_Weights, 101: torchvision.models.ResNet101_Weights}[depth]
    assert resnet_weights(depth, "imagenet") is enum.IMAGENET1K_V1
    assert resnet_weights(depth, None) is None
    calls = []
    real_builder = torchvision.models.resnet50

    def spy(weights, replace_stride_with_dilation):  # records the call, builds a random ResNet-50
        calls.append((weights, replace_stride_with_dilation))
        return real_builder(weights=None, replace_stride_with_dilation=replace_stride_with_dilation)

    monkeypatch.setattr(torchvision.models, f"resnet{depth}", spy)
    build_model(f"deeplabv3_resnet{depth}", CLASSES, output_stride=8, weights="imagenet")
    assert calls == [(enum.IMAGENET1K_V1, [False, True, True])]
    with pytest.raises(ValueError, match="imagenet"):
        build_model(f"deeplabv3_resnet{depth}", CLASSES, weights="IMAGENET1K_V2")


def test_deeplab_trains_with_batch_two_and_refuses_batch_one() -> None:
    model = fresh("deeplabv3_resnet50").train()
    targets = torch.randint(0, 5, (2, SIZE, SIZE))  # (B, H, W)
    F.cross_entropy(model(images()).logits, targets).backward()
    assert all(parameter.grad is not None for parameter in model.parameters())
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        model(images(batch=1))  # image-pooling BN in train mode: documented limitation


@pytest.mark.parametrize("name", ["tiny", "deeplabv3_resnet50"])
def test_bfloat16_autocast_forward_on_cpu(name: str) -> None:
    model = fresh(name).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images())
    assert out.logits.shape == (2, 5, SIZE, SIZE) and torch.isfinite(out.logits.float()).all()
    if name == "tiny":  # a ResNet backward in bf16 is slow on CPU and adds nothing here
        out.logits.float().mean().backward()
        assert model.classifiers[0].weight.grad is not None


@pytest.mark.parametrize("name", ["tiny", "deeplabv3_resnet50"])
def test_channels_last_gives_the_same_output(name: str) -> None:
    model = fresh(name).eval()
    with torch.no_grad():
        reference = model(images())
        model = model.to(memory_format=torch.channels_last)
        out = model(images().to(memory_format=torch.channels_last))
    torch.testing.assert_close(out.logits, reference.logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.features["pre_logits"], reference.features["pre_logits"], rtol=1e-4, atol=1e-4)


def test_predicted_labels_are_the_first_channel_maximum_like_argmax() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randint(0, 3, (3, 5, 4, 6), generator=generator).float()  # (B, C, H, W), many ties
    labels = predicted_labels(logits)
    assert labels.dtype == torch.int64 and labels.shape == (3, 4, 6)
    assert torch.equal(labels, logits.argmax(dim=1))
    for b, i, j in torch.cartesian_prod(torch.arange(3), torch.arange(4), torch.arange(6)).tolist():
        scores = logits[b, :, i, j].tolist()
        assert labels[b, i, j] == scores.index(max(scores))  # the first maximum
