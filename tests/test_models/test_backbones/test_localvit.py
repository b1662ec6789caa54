"""The LocalViT backbone: official sizes, outputs, resizing, freezing."""
import copy

import pytest
import torch
import torch.nn.functional as F

from localvit_mm.analysis import SavedTensorBytes
from localvit_mm.models import LocalViT
from localvit_mm.models.backbones.localvit import resize_pos_embed

# A small arch for fast checks: 3 blocks, 32 dims, SE keeping 4 channels.
SMALL = dict(
    embed_dims=32,
    num_layers=3,
    num_heads=2,
    mlp_ratio=4,
    ffn_cfg=dict(channel_attention=dict(type='SE', reduction=32)))


def small(**kwargs):
    kwargs = dict(dict(arch=SMALL, img_size=32, patch_size=8), **kwargs)
    model = LocalViT(**kwargs)
    model.init_weights()
    return model


def classifier_params(**backbone):
    """Parameters of mmpretrain's ImageClassifier with a 1000-class head."""
    from mmpretrain.registry import MODELS
    arch = LocalViT.arch_zoo[backbone['arch']]
    with torch.device('meta'):
        model = MODELS.build(
            dict(
                type='ImageClassifier',
                backbone=dict(type='LocalViT', **backbone),
                neck=None,
                head=dict(
                    type='LinearClsHead',
                    num_classes=1000,
                    in_channels=arch['embed_dims'])))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    'backbone,expected',
    [
        (dict(arch='tiny'), 5_908_696),
        (dict(arch='tiny-se4'), 9_376_168),
        (dict(arch='small'), 22_433_176),
        (dict(arch='tiny-relu6-mlp6'), 7_655_080),
        (dict(arch='deit-tiny'), 5_717_416),
        (dict(arch='deit-small'), 22_050_664),
        (dict(arch='tiny', ffn_cfg=dict(channel_attention=None)), 5_825_704),
        (dict(arch='tiny',
              ffn_cfg=dict(channel_attention=dict(type='ECA'))), 5_825_764),
        # Paper Table 3: locality in layers 1-4 only (5.78M).
        (dict(arch='tiny', locality_layers=[0, 1, 2, 3]), 5_781_176),
    ])
def test_official_parameter_counts(backbone, expected):
    assert classifier_params(**backbone) == expected


def test_base_parameter_count():
    assert round(classifier_params(arch='base') / 1e6, 2) == 87.33


def test_arch_rows():
    tiny = LocalViT(arch='tiny')
    assert tiny.blocks[0].attn.num_heads == 4
    assert tiny.blocks[0].ffn.channel_attention.fc[0].out_features == 4
    assert isinstance(tiny.blocks[0].ffn.act1, torch.nn.Hardswish)
    assert tiny.blocks[0].norm1.eps == 1e-6 and tiny.norm.eps == 1e-6
    assert tiny.blocks[0].attn.qkv.bias.shape == (3 * 192, )
    deit = LocalViT(arch='deit-tiny')
    assert deit.blocks[0].attn.num_heads == 3
    assert deit.locality_layers == ()
    assert not hasattr(deit.blocks[0], 'ffn')
    relu6 = LocalViT(arch='tiny-relu6-mlp6')
    assert isinstance(relu6.blocks[0].ffn.act1, torch.nn.ReLU6)
    assert relu6.blocks[0].ffn.fc1.out_features == 192 * 6
    assert isinstance(relu6.blocks[0].ffn.channel_attention, torch.nn.Identity)
    assert set(tiny.state_dict()) >= {
        'patch_embed.proj.weight', 'cls_token', 'pos_embed', 'norm.weight',
        'blocks.11.ffn.fc1.weight', 'blocks.0.attn.qkv.weight'
    }


def test_bad_arguments():
    with pytest.raises(ValueError, match="arch 'huge' is not one of"):
        LocalViT(arch='huge')
    with pytest.raises(ValueError, match='custom arch misses'):
        LocalViT(arch=dict(embed_dims=32, num_layers=2))
    with pytest.raises(ValueError, match='out_type must be one of'):
        small(out_type='tokens')
    with pytest.raises(ValueError, match='need with_cls_token=True'):
        small(with_cls_token=False)
    with pytest.raises(ValueError, match='unknown ffn_cfg keys'):
        small(ffn_cfg=dict(dropout=0.1))
    with pytest.raises(ValueError, match=r'locality_layers \[3\]'):
        small(locality_layers=[0, 3])
    with pytest.raises(ValueError, match='out of range'):
        small(out_indices=[3])


def test_ffn_cfg_and_locality_layers():
    model = small(
        locality_layers=[0, 2],
        ffn_cfg=dict(
            mlp_ratio=2,
            act_cfg=dict(type='ReLU6'),
            kernel_size=5,
            channel_attention=dict(type='ECA', gate='hsigmoid')))
    assert model.locality_layers == (0, 2)
    assert [hasattr(b, 'ffn') for b in model.blocks] == [True, False, True]
    assert not hasattr(model.blocks[0], 'norm2')
    assert model.blocks[1].mlp.fc1.out_features == 64
    ffn = model.blocks[0].ffn
    assert ffn.fc1.out_features == 64
    assert ffn.dw_conv.kernel_size == (5, 5)
    assert isinstance(ffn.act2, torch.nn.ReLU6)
    assert ffn.channel_attention.gate is F.hardsigmoid
    # The DeiT arch with locality asked for gets the FFN defaults.
    deit = LocalViT(arch='deit-tiny', locality_layers=[11])
    assert isinstance(deit.blocks[11].ffn.act1, torch.nn.Hardswish)
    assert not hasattr(deit.blocks[10], 'ffn')


def test_drop_path_is_linear_over_depth():
    model = small(drop_path_rate=0.2)
    rates = [b.drop_path.drop_prob for b in model.blocks]
    assert rates == pytest.approx([0., 0.1, 0.2])


def test_official_init():
    model = LocalViT(arch='tiny')
    model.init_weights()
    block = model.blocks[0]
    # Linear layers trunc-normal(0.02), their biases 0.
    assert block.attn.qkv.weight.std().item() == pytest.approx(0.02, rel=.05)
    assert torch.equal(block.attn.qkv.bias, torch.zeros(576))
    assert block.ffn.channel_attention.fc[0].weight.std().item() == \
        pytest.approx(0.02, rel=.1)
    assert model.pos_embed.std().item() == pytest.approx(0.02, rel=.05)
    # The FFN's 1x1 convs keep the conv default: U(+-1/sqrt(fan_in)).
    bound = 1 / 192**.5
    fc1 = block.ffn.fc1.weight
    assert fc1.abs().max().item() <= bound
    assert fc1.std().item() == pytest.approx(bound / 3**.5, rel=.05)
    assert torch.equal(block.norm1.weight, torch.ones(192))
    assert torch.equal(block.ffn.norm1.weight, torch.ones(768))


def test_out_types_agree():
    torch.manual_seed(0)
    raw = small(out_type='raw', out_indices=(0, -1)).eval()
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        outs = raw(x)
    assert [o.shape for o in outs] == [(2, 1 + 4 * 6, 32)] * 2
    for out_type in ('cls_token', 'featmap', 'avg_featmap'):
        model = copy.deepcopy(raw)
        model.out_type = out_type
        with torch.no_grad():
            got = model(x)[-1]
        tokens = outs[-1]
        if out_type == 'cls_token':
            torch.testing.assert_close(got, tokens[:, 0])
        elif out_type == 'featmap':
            assert got.shape == (2, 32, 4, 6)
            torch.testing.assert_close(
                got, tokens[:, 1:].reshape(2, 4, 6, 32).permute(0, 3, 1, 2))
        else:
            torch.testing.assert_close(got, tokens[:, 1:].mean(1))


def test_without_cls_token():
    model = small(with_cls_token=False, out_type='featmap').eval()
    assert model.cls_token is None
    assert model.pos_embed.shape == (1, 16, 32)
    assert model(torch.randn(1, 3, 32, 32))[0].shape == (1, 32, 4, 4)


def test_final_norm():
    model = small(out_type='raw', out_indices=(1, 2)).eval()
    plain = copy.deepcopy(model)
    plain.norm = torch.nn.Identity()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        normed, unnormed = model(x)[1], plain(x)[1]
        torch.testing.assert_close(model.norm(unnormed), normed)
        torch.testing.assert_close(model(x)[0], plain(x)[0])
    assert isinstance(small(final_norm=False).norm, torch.nn.Identity)


def test_output_cls_token_pairs_feed_dpt_head():
    model = small(
        arch=dict(SMALL, num_layers=4),
        out_type='featmap',
        out_indices=(0, 1, 2, 3),
        output_cls_token=True,
        final_norm=False).eval()
    outs = model(torch.randn(2, 3, 32, 40))
    assert len(outs) == 4
    for featmap, cls_token in outs:
        assert featmap.shape == (2, 32, 4, 5)
        assert cls_token.shape == (2, 32)
    outs = model(torch.randn(2, 3, 32, 32))
    from mmseg.models.decode_heads import DPTHead
    head = DPTHead(
        in_channels=(32, 32, 32, 32),
        embed_dims=32,
        post_process_channels=[8, 16, 32, 32],
        channels=16,
        num_classes=3,
        readout_type='project',
        in_index=(0, 1, 2, 3),
        input_transform='multiple_select').eval()
    with torch.no_grad():
        logits = head(list(outs))
    # DPT predicts at 8x the patch lattice (4x reassembly, 2x fusion).
    assert logits.shape == (2, 3, 32, 32)
    assert torch.isfinite(logits).all()


def test_pos_embed_resized_on_load():
    src = small(img_size=48)  # 6x6 lattice
    dst = small(img_size=32)  # 4x4 lattice
    dst.load_state_dict(src.state_dict(), strict=True)
    expected_grid = F.interpolate(
        src.pos_embed[:, 1:].reshape(1, 6, 6, 32).permute(0, 3, 1, 2),
        size=(4, 4),
        mode='bicubic',
        align_corners=False)
    torch.testing.assert_close(dst.pos_embed[:, 0], src.pos_embed[:, 0])
    torch.testing.assert_close(
        dst.pos_embed[:, 1:],
        expected_grid.permute(0, 2, 3, 1).reshape(1, 16, 32))
    # Non-square target, and a model without class token drops its slot.
    wide = small(img_size=(32, 48), with_cls_token=False, out_type='featmap')
    wide.load_state_dict(src.state_dict(), strict=True)
    expected_grid = F.interpolate(
        src.pos_embed[:, 1:].reshape(1, 6, 6, 32).permute(0, 3, 1, 2),
        size=(4, 6),
        mode='bicubic',
        align_corners=False)
    torch.testing.assert_close(
        wide.pos_embed,
        expected_grid.permute(0, 2, 3, 1).reshape(1, 24, 32))


def test_pos_embed_non_square_checkpoint_is_refused():
    src = small(img_size=(32, 48))
    with pytest.raises(ValueError, match='not a square lattice'):
        small(img_size=32).load_state_dict(src.state_dict())


def test_pos_embed_resized_at_forward():
    """Another input size equals a model built for it with resized embeds."""
    torch.manual_seed(0)
    model = small(img_size=32).eval()
    x = torch.randn(2, 3, 40, 56)  # 5x7 lattice
    other = small(img_size=(40, 56)).eval()
    state = model.state_dict()
    state['pos_embed'] = resize_pos_embed(model.pos_embed, (4, 4), (5, 7))
    other.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], other(x)[0])
        # And the 32x32 input uses the stored embeddings unchanged.
        assert model(torch.randn(1, 3, 32, 32))[0].shape == (1, 32)


def test_frozen_stages_really_freeze():
    torch.manual_seed(0)
    model = small(frozen_stages=2, out_type='avg_featmap')
    model.train()
    frozen = [
        'patch_embed', 'cls_token', 'pos_embed', 'blocks.0.', 'blocks.1.'
    ]
    for name, param in model.named_parameters():
        assert param.requires_grad != any(name.startswith(f)
                                          for f in frozen), name
    assert not model.blocks[1].ffn.norm1.training
    assert model.blocks[2].ffn.norm1.training
    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.1)
    # (A plain sum of LayerNorm outputs would have no gradient.)
    loss = (model(torch.randn(4, 3, 32, 32))[0] * torch.randn(32)).sum()
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    for key, value in before.items():
        same = torch.equal(value, after[key])
        if any(key.startswith(f) for f in frozen):
            assert same, f'{key} changed although frozen'
        elif key.startswith('blocks.2.') and 'num_batches' not in key:
            assert not same, f'{key} did not train'
    # All blocks frozen also freezes the final norm.
    model = small(frozen_stages=3)
    model.train()
    assert not model.norm.weight.requires_grad


def test_norm_eval():
    model = small(norm_eval=True)
    model.train()
    assert model.blocks[0].attn.qkv.training
    assert not model.blocks[0].ffn.norm1.training


def test_with_cp_same_gradients_less_saved_memory():
    torch.manual_seed(0)
    plain = LocalViT('tiny', norm_eval=True)
    ckpt = LocalViT('tiny', norm_eval=True, with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 96)
    grads, saved = [], []
    for model in (plain, ckpt):
        model.train()
        with SavedTensorBytes(exclude=model) as counter:
            out = model(x)
        out[0].sum().backward()
        grads.append(model.blocks[3].ffn.fc1.weight.grad)
        saved.append(counter.nbytes)
    torch.testing.assert_close(grads[0], grads[1])
    assert saved[1] < saved[0] / 4, saved
