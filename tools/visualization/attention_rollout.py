"""Attention roll-out heatmaps of a model on one image, overlaid, as a PNG.

    python tools/visualization/attention_rollout.py CONFIG CHECKPOINT IMAGE \
        --out out.png [--mode cls|dense] \
        [--box X1 Y1 X2 Y2 | --from-predictions] [--label L] \
        [--head-fusion mean|max|min] [--token-index I] [--alpha A] \
        [--cfg-options KEY=VALUE ...]

``--mode cls`` (the default for classifiers): roll-out (Abnar & Zuidema,
2020) from the class token (``--token-index 1``: a distillation-style token).
``--mode dense`` (the default for detectors and segmentors): the LIFE paper's
Dense Attention Roll-Out of all tokens, for the tokens inside a region minus
the global mean; the region is ``--box`` (pixels of IMAGE) or, for a
detector or segmentor, its own prediction (the default): the highest-scoring
box (its mask when the detector predicts masks) or the mask of a predicted
class (the largest one besides a 'background' class), ``--label`` choosing
the class. The PNG has the size of IMAGE: the heatmap in the jet colour map
over the image (a class-token map scaled from its minimum to its maximum; a
dense map's positive part, where the region draws more than the image as a
whole, over its maximum), the region outlined in white. The printed line
gives the map's raw range.

Classifiers see the whole image resized to the test pipeline's crop (or
resize) size, or the image's own size when the pipeline sets none; detectors
and segmentors see it through their own test pipeline. Backbones with
global attention only (LocalViT, DeiT, LocalViT-PVT, -T2T, -TNT); the method
and how spatial-reduction keys and pyramid stages are mapped back to tokens
are described in :mod:`localvit_mm.analysis.rollout`.
"""
import argparse
import importlib
import math
import sys
import warnings
from dataclasses import dataclass
from typing import List, Optional, Tuple

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

import cv2
import mmcv
import numpy as np
import torch
from mmengine.config import DictAction

from localvit_mm.analysis.rollout import (HEAD_FUSIONS, capture_attention,
                                          class_token_rollout, dense_rollout,
                                          find_attention, region_token_weights)
from localvit_mm.models.build import build_model_from_config
from localvit_mm.utils import (UserInputError, build_model,
                               check_checkpoint_fits, load_config, run_main)

TASKS = {'mmpretrain': 'classifier', 'mmdet': 'detector', 'mmseg': 'segmentor'}


@dataclass
class Geometry:
    """Where the image lies in the backbone's input.

    Attributes:
        input_shape: (H, W) of the tensor the backbone received.
        img_shape: (h, w) of the resized image in its top-left corner (the
            rest is padding).
        ori_shape: (H, W) of the image file.
    """
    input_shape: Tuple[int, int]
    img_shape: Tuple[int, int]
    ori_shape: Tuple[int, int]


def parse_args(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(
        description='Overlay the attention roll-out of a model on an image.')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint of the config')
    parser.add_argument('image', help='image file')
    parser.add_argument('--out', required=True, help='PNG to write')
    parser.add_argument(
        '--mode',
        choices=['cls', 'dense'],
        help='class-token roll-out or Dense Attention Roll-Out (default: '
        'cls for a classifier, dense for a detector or segmentor)')
    region = parser.add_mutually_exclusive_group()
    region.add_argument(
        '--box',
        type=float,
        nargs=4,
        metavar=('X1', 'Y1', 'X2', 'Y2'),
        help='dense mode: the region, in pixels of IMAGE')
    region.add_argument(
        '--from-predictions',
        action='store_true',
        help="dense mode: the region from the model's own prediction "
        '(the default for a detector or segmentor)')
    parser.add_argument(
        '--label',
        type=int,
        help='with predictions: the class whose box or mask is used')
    parser.add_argument(
        '--head-fusion',
        default='mean',
        choices=HEAD_FUSIONS,
        help='how the heads of a layer are fused (default mean)')
    parser.add_argument(
        '--token-index',
        type=int,
        default=0,
        help='cls mode: the extra token to follow (0 class token, 1 a '
        'distillation token)')
    parser.add_argument(
        '--alpha',
        type=float,
        default=0.5,
        help='weight of the heatmap in the overlay (default 0.5)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. model.backbone.img_size=384')
    return parser.parse_args(argv)


def load_model(cfg, config: str, checkpoint: str):
    """The model of ``cfg`` with the checkpoint's weights, in eval mode
    (config mistakes, backbones without global attention and unfit
    checkpoints as one-line errors)."""
    checked = build_model(cfg, config)
    find_attention(checked)
    state = check_checkpoint_fits(checked, checkpoint, config)
    model = build_model_from_config(cfg)
    model.load_state_dict(state, strict=False)
    model.cfg = cfg  # the codebases' inference APIs read it
    return model.eval()


def class_names(model, cfg) -> tuple:
    """The class names of the model's dataset: the checkpoint's, the
    config's ``metainfo``, or the dataset class's."""
    meta = getattr(model, 'dataset_meta', None) or {}
    dataset = cfg.get('test_dataloader', {}).get('dataset', {})
    classes = meta.get('classes') or (
        dataset.get('metainfo') or {}).get('classes') or (cfg.get('metainfo')
                                                          or {}).get('classes')
    if not classes and isinstance(dataset.get('type'), str):
        registry = importlib.import_module(
            f'{cfg.default_scope}.registry').DATASETS
        dataset_class = registry.get(dataset['type'])
        classes = getattr(dataset_class, 'METAINFO', {}).get('classes')
    return tuple(classes or ())


def label_text(label: int, names: tuple) -> str:
    return f'{label} ({names[label]})' if label < len(names) else str(label)


def classifier_input_size(cfg, image_shape) -> Tuple[int, int]:
    """(h, w) the test pipeline ends with: its crop or resize size, else
    the image's own."""
    pipeline = cfg.get('test_dataloader', {}).get('dataset',
                                                  {}).get('pipeline', [])
    for transform in reversed(pipeline):
        size = transform.get('crop_size') if transform.get(
            'type') == 'CenterCrop' else transform.get('scale') if \
            transform.get('type') == 'Resize' else None
        if size is not None:
            w, h = (size, size) if isinstance(size, int) else size
            return int(h), int(w)
    return tuple(image_shape[:2])


class InputShape:
    """Records the input size of each backbone forward."""

    def __init__(self, backbone):
        self.shapes = []
        self.handle = backbone.register_forward_pre_hook(self.hook)

    def hook(self, _module, args):
        self.shapes.append(tuple(args[0].shape[-2:]))


def run_classifier(model, cfg, path: str, head_fusion: str):
    """Records of one forward of the whole image, its geometry and the
    predicted class."""
    mean = getattr(model.data_preprocessor, 'mean', None)
    grey = mean is not None and mean.shape[0] == 1
    image = mmcv.imread(path, flag='grayscale' if grey else 'color')
    size = classifier_input_size(cfg, image.shape)
    resized = mmcv.imresize(image, size[::-1])
    tensor = torch.from_numpy(resized.reshape(*size, -1)).permute(2, 0, 1)
    data = model.data_preprocessor(dict(inputs=[tensor.contiguous()]), False)
    with torch.no_grad(), capture_attention(model, head_fusion) as records:
        sample = model(data['inputs'], mode='predict')[0]
    label = int(sample.pred_label[0])
    text = (f'predicted class {label_text(label, class_names(model, cfg))}, '
            f'score {float(sample.pred_score[label]):.3f}')
    return records, Geometry(size, size, image.shape[:2]), sample, text


def run_dense_model(model, task: str, path: str, head_fusion: str):
    """Records of the codebase's own inference on the image, its geometry
    and the prediction."""
    if task == 'detector':
        from mmdet.apis import inference_detector as inference
    else:
        from mmseg.apis import inference_model as inference
    shapes = InputShape(model.backbone)
    try:
        with capture_attention(model, head_fusion) as records:
            sample = inference(model, path)
    finally:
        shapes.handle.remove()
    if len(shapes.shapes) != 1:
        raise UserInputError(
            f'the backbone ran {len(shapes.shapes)} times on one image '
            '(sliding-window or test-time augmentation): roll-out needs one '
            "forward, e.g. --cfg-options model.test_cfg.mode='whole'")
    meta = sample.metainfo
    geometry = Geometry(shapes.shapes[0], tuple(meta['img_shape'][:2]),
                        tuple(meta['ori_shape'][:2]))
    return records, geometry, sample


def box_mask(box, ori_shape) -> np.ndarray:
    """A boolean mask of a box in image pixels."""
    H, W = ori_shape
    x1, y1, x2, y2 = box
    if not (x1 < x2 and y1 < y2):
        raise UserInputError(f'--box {box}: need x1 < x2 and y1 < y2')
    cols = (np.arange(W) + 0.5 > x1) & (np.arange(W) + 0.5 < x2)
    rows = (np.arange(H) + 0.5 > y1) & (np.arange(H) + 0.5 < y2)
    mask = rows[:, None] & cols[None, :]
    if not mask.any():
        raise UserInputError(f'--box {box} lies outside the {W}x{H} image')
    return mask


def predicted_region(sample, task: str, label: Optional[int], names: tuple):
    """The mask (image pixels) of the prediction the map explains, whether
    it is a box, and a description."""
    if task == 'detector':
        inst = sample.pred_instances
        if label is not None:
            inst = inst[inst.labels == label]
        if len(inst) == 0:
            which = '' if label is None else f' of label {label}'
            raise UserInputError(f'the detector predicted no box{which}: '
                                 'pass --box X1 Y1 X2 Y2')
        top = int(inst.scores.argmax())
        box = inst.bboxes[top].tolist()
        text = (f'predicted box {[round(v, 1) for v in box]} of class '
                f'{label_text(int(inst.labels[top]), names)}, score '
                f'{float(inst.scores[top]):.3f}')
        if 'masks' in inst:
            return inst.masks[top].cpu().numpy().astype(bool), False, \
                text + ' (its mask)'
        return box_mask(box, sample.metainfo['ori_shape'][:2]), True, text
    seg = sample.pred_sem_seg.data[0].cpu()
    labels, counts = seg.unique(return_counts=True)
    if label is None:
        order = counts.argsort(descending=True).tolist()
        foreground = [
            i for i in order if not (int(labels[i]) < len(names) and str(names[
                int(labels[i])]).strip('_').lower() == 'background')
        ]
        label = int(labels[(foreground or order)[0]])
    mask = (seg == label).numpy()
    if not mask.any():
        raise UserInputError(f'the segmentor predicted no pixel of class '
                             f'{label}: pass another --label or --box')
    share = ', '.join(f'{label_text(int(lb), names)} {int(c)}'
                      for lb, c in zip(labels, counts))
    return mask, False, (f'predicted mask of class {label_text(label, names)}'
                         f' ({int(mask.sum())} pixels; predicted: {share})')


def strides(geometry: Geometry, lattice) -> Tuple[int, int]:
    """Input pixels per token of the first attention layer's lattice."""
    return tuple(
        max(1, round(s / n)) for s, n in zip(geometry.input_shape, lattice))


def last_lattice_strides(records, geometry: Geometry) -> Tuple[int, int]:
    """Input pixels per token of the last layer's lattice: the first one's,
    times each stage's pooling (as the roll-out upsamples between stages)."""
    stride = strides(geometry, records[0].hw_shape)
    for before, after in zip(records, records[1:]):
        stride = tuple(
            s * math.ceil(b / a)
            for s, b, a in zip(stride, before.hw_shape, after.hw_shape))
    return stride


def region_coverage(mask: np.ndarray, geometry: Geometry,
                    records) -> torch.Tensor:
    """The share of each token cell of the last layer's lattice that the
    mask (image pixels) covers."""
    lattice = records[-1].hw_shape
    (h, w), (sy,
             sx) = geometry.img_shape, last_lattice_strides(records, geometry)
    resized = cv2.resize(
        mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((lattice[0] * sy, lattice[1] * sx), np.float32)
    h, w = min(h, canvas.shape[0]), min(w, canvas.shape[1])
    canvas[:h, :w] = resized[:h, :w]
    cells = canvas.reshape(lattice[0], sy, lattice[1], sx).mean((1, 3))
    return torch.from_numpy(cells)


def map_to_image(heat: np.ndarray, geometry: Geometry) -> np.ndarray:
    """A map on a token lattice upsampled to the pixels of the image file."""
    (sy, sx) = strides(geometry, heat.shape)
    up = cv2.resize(heat, (heat.shape[1] * sx, heat.shape[0] * sy))
    (h, w), (H, W) = geometry.img_shape, geometry.ori_shape
    canvas = np.zeros((max(h, up.shape[0]), max(w, up.shape[1])), np.float32)
    canvas[:up.shape[0], :up.shape[1]] = up
    return cv2.resize(canvas[:h, :w], (W, H))


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float,
            region: Optional[np.ndarray], is_box: bool) -> np.ndarray:
    """The image with the [0, 1] heatmap in the jet colour map over it and
    the region outlined in white."""
    colour = cv2.applyColorMap(
        np.uint8(np.clip(heat, 0, 1) * 255), cv2.COLORMAP_JET)
    out = cv2.addWeighted(image, 1 - alpha, colour, alpha, 0)
    if region is not None:
        thickness = max(1, round(min(image.shape[:2]) / 250))
        if is_box:
            ys, xs = np.nonzero(region)
            cv2.rectangle(out, (int(xs.min()), int(ys.min())),
                          (int(xs.max()), int(ys.max())), (255, 255, 255),
                          thickness)
        else:
            contours, _ = cv2.findContours(
                region.astype(np.uint8), cv2.RETR_EXTERNAL,
                cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, (255, 255, 255), thickness)
    return out


def main(argv: Optional[List[str]] = None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    task = TASKS[cfg.default_scope]
    mode = args.mode or ('cls' if task == 'classifier' else 'dense')
    if mode == 'cls' and (args.box or args.from_predictions):
        raise UserInputError('--box and --from-predictions are for '
                             '--mode dense')
    if mode == 'dense' and task == 'classifier' and not args.box:
        raise UserInputError('dense roll-out on a classifier needs --box X1 '
                             'Y1 X2 Y2 (a classifier predicts no region)')
    if not 0 <= args.alpha <= 1:
        raise UserInputError(f'--alpha {args.alpha} is not in [0, 1]')
    try:
        image = mmcv.imread(args.image)
    except Exception:  # a missing file or one OpenCV cannot decode
        image = None
    if image is None:
        raise UserInputError(f'image {args.image!r} cannot be read: pass an '
                             'existing image file')
    model = load_model(cfg, args.config, args.checkpoint)
    names = class_names(model, cfg)
    if task == 'classifier':
        records, geometry, sample, text = run_classifier(
            model, cfg, args.image, args.head_fusion)
    else:
        records, geometry, sample = run_dense_model(model, task, args.image,
                                                    args.head_fusion)
        text = ''
    region, is_box = None, False
    if mode == 'cls':
        heat = class_token_rollout(records, args.head_fusion,
                                   args.token_index)[0]
        what = f'class-token roll-out (token {args.token_index})'
    else:
        if args.box:
            region, is_box = box_mask(args.box, geometry.ori_shape), True
            text = f'box {args.box}'
        else:
            region, is_box, text = predicted_region(sample, task, args.label,
                                                    names)
        coverage = region_coverage(region, geometry, records)
        weights = region_token_weights(coverage)
        heat = dense_rollout(records, weights, args.head_fusion)[0]
        what = (f'dense roll-out of {int((weights > 0).sum())} of '
                f'{weights.numel()} output tokens minus the global mean')
    heat = heat.numpy()
    low, high = float(heat.min()), float(heat.max())
    # cls: min-max (the map is positive, often flat); dense: the positive
    # part over its maximum (0 is the global mean).
    heat = (heat - low) / (high - low or 1) if mode == 'cls' else \
        np.clip(heat, 0, None) / (high if high > 0 else 1)
    picture = overlay(image, map_to_image(heat, geometry), args.alpha, region,
                      is_box)
    if not mmcv.imwrite(picture, args.out):
        raise UserInputError(f'cannot write {args.out!r}')
    print(f'{what}, heads fused by {args.head_fusion}, {len(records)} '
          f'attention layers, map on a {heat.shape[0]}x{heat.shape[1]} token '
          f'lattice from {low:.3g} to {high:.3g}; {text}')
    print(f'written {args.out} ({image.shape[1]}x{image.shape[0]})')


if __name__ == '__main__':
    run_main(main, sys.argv[1:])
