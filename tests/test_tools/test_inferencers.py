"""The codebases' own inferencers (mmpretrain
``ImageClassificationInferencer``, mmdet ``DetInferencer``, mmseg
``MMSegInferencer``) and the demo/ scripts run the project's configs on real
images: a Fashion-MNIST test image written as PNG by the demo script, a
deepforest tile of the held-out scene, a labelme street frame. The
checkpoints are the built models' weights with the dataset meta, saved as
mmengine's runner saves them; each inferencer runs once per module and the
demo scripts (subprocesses) must print and save what it gave."""
import importlib.util
import json
import os.path as osp
from concurrent.futures import ThreadPoolExecutor

import mmcv
import numpy as np
import pytest
import torch
from conftest import REPO, run_tool
from dense_runs import prepare
from mmengine.config import Config
from mmengine.registry import DATASETS
from PIL import Image

from localvit_mm.models.build import build_model_from_config
from localvit_mm.utils import load_config

CLS_CONFIG = osp.join(
    REPO, 'configs/quickstart/localvit-tiny_2xb32_fashion-mnist.py')
DET_CONFIG = osp.join(
    REPO, 'configs/detection/retinanet_localvit-pvt-t_fpn_deepforest.py')
SEG_CONFIG = osp.join(REPO,
                      'configs/segmentation/fpn_localvit-swin-t_labelme.py')
# A tile of the held-out scene and a held-out street frame.
TREE_TILE = osp.join(
    REPO, 'data/deepforest/images/'
    '2019_YELL_2_541000_4977000_image_crop_256_256.png')
STREET_FRAME = osp.join(REPO, 'data/labelme_seg/img_dir/val/00000103.jpg')


def write_checkpoint(config, path):
    """The built model's (seeded, untrained) weights and the config's
    dataset meta, saved as mmengine's runner saves them (the inferencers
    take the classes from there)."""
    cfg = load_config(config)
    torch.manual_seed(0)
    model = build_model_from_config(cfg)
    dataset = cfg.test_dataloader.dataset
    dataset_meta = dataset.get('metainfo') or DATASETS.get(
        f'{cfg.default_scope}.{dataset.type}').METAINFO
    torch.save(
        dict(
            state_dict=model.state_dict(),
            meta=dict(dataset_meta=dict(dataset_meta))), path)
    return str(path)


def image_size(path):
    with Image.open(path) as image:
        return image.size


# Classification: the quickstart's LocalViT-T on a Fashion-MNIST PNG.


@pytest.fixture(scope='module')
def fashion_png(tmp_path_factory, fashion_mnist):
    """Test image 0 (an ankle boot) written by demo/fashion_mnist_to_png.py,
    checked against mmpretrain's reading of the dataset."""
    from mmpretrain.datasets import FashionMNIST
    from mmpretrain.datasets.mnist import read_image_file
    out = tmp_path_factory.mktemp('fashion_png')
    result = run_tool('python', 'demo/fashion_mnist_to_png.py', '--data-root',
                      fashion_mnist, '--num', '1', '--out', str(out))
    assert result.returncode == 0, result.stderr
    path = out / '00000_ankle-boot.png'
    assert result.stdout.split() == [str(path)]
    with Image.open(path) as image:
        assert image.mode == 'L'
        pixels = np.asarray(image)
    images = read_image_file(osp.join(fashion_mnist, 't10k-images-idx3-ubyte'))
    assert np.array_equal(pixels, images[0].numpy())

    spec = importlib.util.spec_from_file_location(
        'fashion_mnist_to_png', osp.join(REPO, 'demo/fashion_mnist_to_png.py'))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert list(script.CLASSES) == list(FashionMNIST.METAINFO['classes'])
    return str(path)


@pytest.fixture(scope='module')
def cls_run(tmp_path_factory, fashion_png):
    """The inferencer's result on the PNG, its model, checkpoint and the
    folder of its drawn image."""
    from mmpretrain.apis import ImageClassificationInferencer
    tmp = tmp_path_factory.mktemp('cls')
    checkpoint = write_checkpoint(CLS_CONFIG, tmp / 'localvit.pth')
    inferencer = ImageClassificationInferencer(
        CLS_CONFIG, pretrained=checkpoint, device='cpu')
    results = inferencer(fashion_png, show_dir=str(tmp / 'vis'))
    return results, inferencer, checkpoint, tmp / 'vis'


def test_classification_inferencer(cls_run, fashion_png, fashion_mnist):
    """The inferencer reads the PNG to exactly the dataset's 28x28 grey
    input, gives the scores the model gives when called directly on the
    image, names the top class from the checkpoint's meta and saves the
    drawn image at the input's size."""
    from mmpretrain.datasets import FashionMNIST
    (result, ), inferencer, _, vis_dir = cls_run
    model = inferencer.model

    pixels = torch.from_numpy(mmcv.imread(fashion_png, flag='grayscale'))
    preprocessor = model.data_preprocessor
    inputs = (pixels.float() - preprocessor.mean) / preprocessor.std
    with torch.no_grad():
        scores = model(inputs[None], mode='tensor').softmax(dim=1)[0]
    assert np.array_equal(result['pred_scores'], scores.numpy())
    label = int(scores.argmax())
    assert result['pred_label'] == label
    assert result['pred_score'] == float(scores[label])
    assert result['pred_class'] == FashionMNIST.METAINFO['classes'][label]

    # The config's test pipeline turns the colour file the inferencer reads
    # and the dataset's grey array into the same input.
    from_file = inferencer.pipeline(dict(img=mmcv.imread(fashion_png)))
    dataset = FashionMNIST(
        data_root=fashion_mnist,
        split='test',
        test_mode=True,
        pipeline=Config.fromfile(CLS_CONFIG).test_dataloader.dataset.pipeline)
    assert torch.equal(from_file['inputs'], pixels[None])
    assert torch.equal(dataset[0]['inputs'], pixels[None])

    assert image_size(vis_dir / '00000_ankle-boot.png') == (28, 28)


# Detection: RetinaNet + LocalViT-PVT-T on a deepforest tile.


@pytest.fixture(scope='module')
def det_run(tmp_path_factory):
    """The inferencer's result on the tile (boxes above 0.3 drawn) and the
    checkpoint."""
    from mmdet.apis import DetInferencer
    prepare('prepare_deepforest.py')
    tmp = tmp_path_factory.mktemp('det')
    checkpoint = write_checkpoint(DET_CONFIG, tmp / 'retinanet.pth')
    inferencer = DetInferencer(
        DET_CONFIG, checkpoint, device='cpu', show_progress=False)
    result = inferencer(
        TREE_TILE,
        out_dir=str(tmp / 'out'),
        pred_score_thr=0.3,
        no_save_pred=False)
    return result, inferencer, checkpoint, tmp / 'out'


def test_det_inferencer(det_run):
    """Classes from the checkpoint, palette from the config; boxes in the
    tile's pixels (the model sees it at half size), best first, at most the
    config's 150; the drawn tile saved at its size, the predictions as
    json."""
    result, inferencer, _, out = det_run
    assert inferencer.model.dataset_meta == dict(
        classes=('tree', ), palette=[(0, 200, 0)])
    pred, = result['predictions']
    width, height = image_size(TREE_TILE)
    assert (width, height) == (256, 256)
    boxes = np.array(pred['bboxes'])
    assert 0 < len(boxes) == len(pred['scores']) <= 150
    assert set(pred['labels']) == {0}
    assert pred['scores'] == sorted(pred['scores'], reverse=True)
    assert (boxes >= 0).all() and (boxes[:, [0, 2]]
                                   <= width).all() and (boxes[:, [1, 3]]
                                                        <= height).all()
    assert boxes[:, 2:].max() > 128  # scaled back from the 128-px input

    name = osp.basename(TREE_TILE)
    assert image_size(out / 'vis' / name) == (width, height)
    with Image.open(TREE_TILE) as tile, Image.open(out / 'vis' / name) as vis:
        assert not np.array_equal(np.asarray(tile.convert('RGB')), vis)
    saved = json.loads(
        (out / 'preds' / name.replace('.png', '.json')).read_text())
    assert saved == pred


# Segmentation: Semantic FPN + LocalViT-Swin on a labelme street frame.


@pytest.fixture(scope='module')
def seg_run(tmp_path_factory):
    """The inferencer's result on the frame and the checkpoint."""
    from mmseg.apis import MMSegInferencer
    prepare('prepare_labelme.py')
    tmp = tmp_path_factory.mktemp('seg')
    checkpoint = write_checkpoint(SEG_CONFIG, tmp / 'fpn.pth')
    inferencer = MMSegInferencer(SEG_CONFIG, checkpoint, device='cpu')
    result = inferencer(STREET_FRAME, out_dir=str(tmp / 'out'))
    return result, inferencer, checkpoint, tmp / 'out'


def test_seg_inferencer(seg_run):
    """A label of the config's 8 classes for every pixel of the 1000x563
    frame, saved as a label PNG; the drawn frame saved at its size with the
    config's classes and palette."""
    result, inferencer, _, out = seg_run
    metainfo = Config.fromfile(SEG_CONFIG).metainfo
    assert inferencer.visualizer.dataset_meta == dict(
        classes=metainfo.classes, palette=metainfo.palette)
    labels = result['predictions']
    assert labels.shape == (563, 1000)
    assert 0 <= labels.min() and labels.max() < 8
    with Image.open(out / 'pred' / '00000000_pred.png') as saved:
        assert np.array_equal(np.asarray(saved), labels)
    assert image_size(out / 'vis' / '00000103.jpg') == (1000, 563)


# The demo scripts, as subprocesses on the same images and checkpoints.


@pytest.fixture(scope='module')
def demo_runs(tmp_path_factory, fashion_png, cls_run, det_run, seg_run):
    """The three demo scripts run at once (each spends most of its time
    importing torch and the codebases): their completed processes and
    output folders."""
    out = tmp_path_factory.mktemp('demos')
    commands = dict(
        cls=('demo/image_demo.py', fashion_png,
             CLS_CONFIG, '--checkpoint', cls_run[2], '--show-dir',
             str(out / 'cls'), '--rescale-factor', '8'),
        det=('demo/det_demo.py', TREE_TILE, DET_CONFIG, '--weights',
             det_run[2], '--out-dir', str(out / 'det')),
        seg=('demo/seg_demo.py', STREET_FRAME, SEG_CONFIG, '--checkpoint',
             seg_run[2], '--out-dir', str(out / 'seg')))
    with ThreadPoolExecutor(len(commands)) as pool:
        runs = {
            task: pool.submit(run_tool, 'python', *args, '--device', 'cpu')
            for task, args in commands.items()
        }
    done = {task: run.result() for task, run in runs.items()}
    for task, result in done.items():
        assert result.returncode == 0, f'{task}: {result.stderr[-3000:]}'
    return done, out


def test_image_demo(demo_runs, cls_run):
    """demo/image_demo.py prints the inferencer's top class and saves the
    drawn image, 8x larger with --rescale-factor 8."""
    (result, ), *_ = cls_run
    done, out = demo_runs
    assert done['cls'].stdout.splitlines()[-1] == (
        f'00000_ankle-boot.png: {result["pred_class"]} '
        f'(label {result["pred_label"]}, score {result["pred_score"]:.3f})')
    assert image_size(out / 'cls' / '00000_ankle-boot.png') == (224, 224)


def test_det_demo(demo_runs, det_run):
    """demo/det_demo.py saves the inferencer's predictions and drawing and
    prints the count of boxes above the threshold."""
    result, *_ = det_run
    done, out = demo_runs
    name = osp.basename(TREE_TILE)
    pred, = result['predictions']
    saved = json.loads(
        (out / 'det' / 'preds' / name.replace('.png', '.json')).read_text())
    assert saved['labels'] == pred['labels']
    np.testing.assert_allclose(saved['scores'], pred['scores'], atol=1e-5)
    kept = [s for s in pred['scores'] if s >= 0.3]
    assert done['det'].stdout.splitlines()[-1] == (
        f'{name}: {len(kept)} tree (score >= 0.3), best {max(kept):.3f}')
    assert image_size(out / 'det' / 'vis' / name) == (256, 256)


def test_seg_demo(demo_runs, seg_run):
    """demo/seg_demo.py saves the inferencer's label map and drawing and
    prints each class's share of the pixels."""
    result, *_ = seg_run
    done, out = demo_runs
    labels = result['predictions']
    with Image.open(out / 'seg' / 'pred' / '00000000_pred.png') as saved:
        assert np.array_equal(np.asarray(saved), labels)
    classes = Config.fromfile(SEG_CONFIG).metainfo.classes
    values, counts = np.unique(labels, return_counts=True)
    shares = ', '.join(f'{classes[v]} {100 * c / labels.size:.1f}%'
                       for v, c in zip(values, counts))
    assert done['seg'].stdout.splitlines()[-1] == f'00000103.jpg: {shares}'
    assert image_size(out / 'seg' / 'vis' / '00000103.jpg') == (1000, 563)
