"""The locality FFN against the official op order, computed by hand."""
import importlib.util
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F

from localvit_mm.models.layers import ECALayer, LocalityFeedForward, SELayer

REPO = osp.dirname(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def load_converter():
    path = osp.join(REPO, 'tools', 'model_converters',
                    'localvit_to_mmpretrain.py')
    spec = importlib.util.spec_from_file_location('localvit_converter', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official_ffn(dims, gamma=4, dw=True, attention=None, kernel=3, seed=0):
    """Random weights in the official ``conv.conv.{k}`` layout.

    The indices follow the official construction: conv, BN, act, [dw conv,
    BN, act], [SE / ECA], conv, BN. ``attention`` is None, ``('se', r)`` or
    ``('eca', k)``.
    """
    g = torch.Generator().manual_seed(seed)
    hidden = int(dims * gamma)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    def bn(c):
        return {
            'weight': 1 + 0.2 * rand(c),
            'bias': 0.2 * rand(c),
            'running_mean': 0.1 * rand(c),
            'running_var':
            0.5 + torch.rand(c, generator=g, dtype=torch.float64),
            'num_batches_tracked': torch.tensor(7),
        }

    modules = [('pw1', {
        'weight': rand(hidden, dims, 1, 1) / dims**.5
    }), ('bn1', bn(hidden)), ('act', {})]
    if dw:
        modules += [('dw', {
            'weight': rand(hidden, 1, kernel, kernel) / 3
        }), ('bn2', bn(hidden)), ('act', {})]
    if attention and attention[0] == 'se':
        squeezed = hidden // attention[1]
        modules.append(('se', {
            'fc.0.weight': rand(squeezed, hidden) / hidden**.5,
            'fc.0.bias': 0.1 * rand(squeezed),
            'fc.2.weight': rand(hidden, squeezed) / squeezed**.5,
            'fc.2.bias': 0.1 * rand(hidden),
        }))
    elif attention:
        modules.append(('eca', {'conv.weight': rand(1, 1, attention[1])}))
    modules += [('pw2', {
        'weight': rand(dims, hidden, 1, 1) / hidden**.5
    }), ('bn3', bn(dims))]
    weights, roles = {}, {}
    for index, (role, params) in enumerate(modules):
        roles[role] = index
        for name, value in params.items():
            weights[f'blocks.0.conv.conv.{index}.{name}'] = value
    return weights, roles


def reference_ffn(x,
                  hw_shape,
                  extra,
                  weights,
                  roles,
                  act,
                  gate='hsigmoid',
                  kernel=3,
                  training=False):
    """The official LocalityFeedForward in plain torch ops (NCHW convs)."""

    def w(role, name='weight'):
        return weights[f'blocks.0.conv.conv.{roles[role]}.{name}']

    def bn(y, role):
        if training:
            mean = y.mean((0, 2, 3))
            var = y.var((0, 2, 3), unbiased=False)
        else:
            mean, var = w(role, 'running_mean'), w(role, 'running_var')
        y = (y - mean[:, None, None]) / torch.sqrt(var[:, None, None] + 1e-5)
        return y * w(role)[:, None, None] + w(role, 'bias')[:, None, None]

    def activation(y):
        if act == 'relu6':
            return y.clamp(0, 6)
        return y * (y + 3).clamp(0, 6) / 6

    B, N, C = x.shape
    H, W = hw_shape
    cls, tokens = x[:, :extra], x[:, extra:]
    img = tokens.transpose(1, 2).reshape(B, C, H, W)
    y = activation(bn(F.conv2d(img, w('pw1')), 'bn1'))
    if 'dw' in roles:
        y = F.conv2d(y, w('dw'), padding=kernel // 2, groups=y.shape[1])
        y = activation(bn(y, 'bn2'))
    if 'se' in roles:
        s = y.mean((2, 3))
        s = torch.relu(s @ w('se', 'fc.0.weight').T + w('se', 'fc.0.bias'))
        s = s @ w('se', 'fc.2.weight').T + w('se', 'fc.2.bias')
        y = y * ((s + 3).clamp(0, 6) / 6)[:, :, None, None]
    if 'eca' in roles:
        s = y.mean((2, 3))[:, None, :]
        k = w('eca', 'conv.weight')
        s = F.conv1d(s, k, padding=k.shape[-1] // 2)[:, 0]
        s = torch.sigmoid(s) if gate == 'sigmoid' else (s + 3).clamp(0, 6) / 6
        y = y * s[:, :, None, None]
    y = bn(F.conv2d(y, w('pw2')), 'bn3')
    out = (img + y).flatten(2).transpose(1, 2)
    return torch.cat([cls, out], dim=1)


def ours_from_official(weights, dims, **kwargs):
    """Our FFN loaded (strictly) through the converter's key mapping."""
    converter = load_converter()
    state = converter.map_conv_ffn(weights, 'blocks.0.conv.conv.', '')
    ffn = LocalityFeedForward(dims, **kwargs).double()
    ffn.load_state_dict(state, strict=True)
    return ffn


LAYOUTS = [
    # (gamma, dw, attention, act, gate, kernel)
    (4, True, ('se', 8), 'hswish', None, 3),
    (4, True, None, 'relu6', None, 3),
    (2, True, ('eca', 3), 'hswish', 'sigmoid', 3),
    (3, True, ('eca', 3), 'hswish', 'hsigmoid', 5),
    (4, False, ('se', 4), 'hswish', None, 3),
    (6, False, None, 'relu6', None, 3),
]


@pytest.mark.parametrize('gamma,dw,attention,act,gate,kernel', LAYOUTS)
@pytest.mark.parametrize('training', [False, True])
def test_matches_official_op_order(gamma, dw, attention, act, gate, kernel,
                                   training):
    dims, hw_shape, extra = 8, (3, 5), 1
    weights, roles = official_ffn(dims, gamma, dw, attention, kernel)
    ca = None
    if attention and attention[0] == 'se':
        ca = dict(type='SE', reduction=attention[1])
    elif attention:
        ca = dict(type='ECA', gate=gate)
    ffn = ours_from_official(
        weights,
        dims,
        expansion_ratio=gamma,
        kernel_size=kernel,
        with_dw_conv=dw,
        channel_attention=ca,
        act_cfg=dict(type='ReLU6' if act == 'relu6' else 'HSwish'))
    ffn.train(training)
    x = torch.randn(2, extra + 15, dims, dtype=torch.float64)
    expected = reference_ffn(x, hw_shape, extra, weights, roles, act, gate,
                             kernel, training)
    torch.testing.assert_close(
        ffn(x, hw_shape, extra), expected, rtol=1e-10, atol=1e-10)


def test_converter_refuses_depthwise_first():
    weights, _ = official_ffn(8, gamma=1)
    # The official ``dp_first`` layout: dw conv, BN, act, 1x1 conv, BN, act.
    swap = {'0': '3', '1': '4', '3': '0', '4': '1'}
    prefix = 'blocks.0.conv.conv.'
    swapped = {}
    for key, value in weights.items():
        index, rest = key[len(prefix):].split('.', 1)
        swapped[f'{prefix}{swap.get(index, index)}.{rest}'] = value
    assert swapped[prefix + '0.weight'].shape == (8, 1, 3, 3)
    with pytest.raises(ValueError, match='cannot hold'):
        load_converter().map_conv_ffn(swapped, prefix, '')


@pytest.mark.parametrize('hw_shape', [(2, 7), (7, 2), (4, 4), (1, 1)])
@pytest.mark.parametrize('extra', [0, 1, 2])
def test_extra_tokens_pass_and_lattice(hw_shape, extra):
    ffn = LocalityFeedForward(
        8, channel_attention=dict(type='SE', reduction=4)).eval()
    x = torch.randn(3, extra + math.prod(hw_shape), 8)
    out = ffn(x, hw_shape, extra)
    assert out.shape == x.shape
    assert torch.equal(out[:, :extra], x[:, :extra])
    # Each image token sees only its 3x3 neighbourhood (and SE's mean):
    # with SE off, a change in one token moves only its neighbours.
    ffn = LocalityFeedForward(8).eval()
    H, W = hw_shape
    y = x.clone()
    y[:, extra] += 1  # the top-left token
    changed = (ffn(y, hw_shape, extra) - ffn(x, hw_shape, extra)).abs().sum(
        (0, 2))[extra:].reshape(H, W) > 0
    expected = torch.zeros(H, W, dtype=torch.bool)
    expected[:2, :2] = True
    assert torch.equal(changed, expected)


def test_wrong_lattice_is_refused():
    ffn = LocalityFeedForward(8)
    with pytest.raises(ValueError, match='do not fill a 3x3 lattice'):
        ffn(torch.randn(1, 1 + 10, 8), (3, 3), 1)


OPTIONS = [
    dict(act_cfg=dict(type='ReLU6')),
    dict(act_cfg=dict(type='HSwish')),
    dict(channel_attention=dict(type='SE', reduction=4)),
    dict(channel_attention=dict(type='SE', reduction=16)),
    dict(channel_attention=dict(type='SE', reduction=64)),
    dict(channel_attention=dict(type='ECA', gate='sigmoid')),
    dict(channel_attention=dict(type='ECA', gate='hsigmoid')),
    dict(expansion_ratio=1),
    dict(expansion_ratio=2),
    dict(expansion_ratio=3),
    dict(expansion_ratio=4),
    dict(expansion_ratio=6),
    dict(kernel_size=3),
    dict(kernel_size=5),
    dict(with_dw_conv=False),
    dict(with_dw_conv=False, channel_attention=dict(type='SE', reduction=4)),
]


@pytest.mark.parametrize('options', OPTIONS)
def test_every_option_forward_backward(options):
    torch.manual_seed(0)
    ffn = LocalityFeedForward(16, **options)
    if isinstance(ffn.channel_attention, SELayer):
        # Keep the squeeze's ReLU open: with 1 channel it may die at random.
        torch.nn.init.constant_(ffn.channel_attention.fc[0].bias, 1.)
    hidden = int(16 * options.get('expansion_ratio', 4))
    assert ffn.fc1.weight.shape == (hidden, 16)
    x = torch.randn(2, 1 + 12, 16, requires_grad=True)
    out = ffn(x, (3, 4), 1)
    out.square().sum().backward()
    assert out.shape == x.shape
    for name, param in ffn.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), \
            name
        assert param.grad.abs().sum() > 0, name
    if 'kernel_size' in options:
        k = options['kernel_size']
        assert ffn.dw_conv.weight.shape == (hidden, 1, k, k)


def test_channel_attention_sizes():
    assert SELayer(768, reduction=192).fc[0].out_features == 4
    assert SELayer(768, reduction=4).fc[0].out_features == 192
    assert ECALayer(768).conv.kernel_size == (5, )
    with pytest.raises(ValueError, match='leaves no channel'):
        SELayer(64, reduction=128)
    with pytest.raises(ValueError, match='gate must be one of'):
        ECALayer(64, gate='relu')
