"""LocalViT-PVT-T in mmdet and mmseg models, trained on real images through
tools/train.py and tools/test.py (CPU-sized runs, data prepared by the
project's own tools/data scripts)."""
import json
import os.path as osp
import pickle

import pytest
from conftest import REPO, run_tool
from dense_runs import background_only_miou, mean, metrics, prepare, train

DET_CONFIG = 'configs/detection/retinanet_localvit-pvt-t_fpn_deepforest.py'
MASK_CONFIG = 'configs/detection/mask-rcnn_localvit-pvt-t_fpn_labelme.py'
SEG_CONFIG = 'configs/segmentation/fpn_localvit-pvt-t_labelme.py'


@pytest.fixture(scope='module')
def deepforest():
    prepare('prepare_deepforest.py')
    return osp.join(REPO, 'data', 'deepforest')


@pytest.fixture(scope='module')
def labelme():
    prepare('prepare_labelme.py')
    return osp.join(REPO, 'data')


def test_retinanet_learns_tree_crowns(tmp_path, deepforest):
    """RetinaNet trains from scratch on deepforest tiles and finds trees in
    a held-out scene (after 20 iterations it scored box mAP@0.5 0.002)."""
    work_dir, losses, _ = train(tmp_path, DET_CONFIG)
    assert len(losses) == 150
    assert mean(losses[-10:]) < 0.75 * mean(losses[:10])
    map50 = metrics(work_dir, 'coco/bbox_mAP_50')
    assert map50 > 0.02, f'box mAP@0.5 {map50}'

    result = run_tool('python', 'tools/test.py', str(tmp_path / 'config.py'),
                      str(work_dir / 'iter_150.pth'), '--work-dir',
                      str(tmp_path / 'test'))
    assert result.returncode == 0, result.stderr[-4000:]
    assert metrics(tmp_path / 'test', 'coco/bbox_mAP_50') == pytest.approx(
        map50, abs=1e-3)


def test_mask_rcnn_trains_on_coco_polygons(tmp_path, labelme):
    """Mask R-CNN runs training iterations on labelme's COCO polygons with
    two CPU processes (gloo) and is evaluated with box and mask COCO
    metrics; tools/test.py gives the same metrics from the checkpoint and
    dumps one mask per box, at each photo's size."""
    work_dir, losses, log = train(tmp_path, MASK_CONFIG, nproc=2)
    assert len(losses) == 4
    assert 'GPU number: 2' in log, log[-2000:]  # mmengine's world size
    assert 'loss_mask' in log and 'loss_rpn_cls' in log
    assert osp.exists(work_dir / 'iter_4.pth')

    preds = tmp_path / 'preds.pkl'
    result = run_tool('python', 'tools/test.py', str(tmp_path / 'config.py'),
                      str(work_dir / 'iter_4.pth'), '--work-dir',
                      str(tmp_path / 'test'), '--out', str(preds))
    assert result.returncode == 0, result.stderr[-4000:]
    for key in ('coco/bbox_mAP', 'coco/segm_mAP'):
        assert metrics(tmp_path / 'test', key) == pytest.approx(
            metrics(work_dir, key), abs=1e-3)
    with open(
            osp.join(labelme, 'labelme_coco', 'annotations',
                     'instances.json')) as f:
        sizes = {
            image['id']: [image['height'], image['width']]
            for image in json.load(f)['images']
        }
    with open(preds, 'rb') as f:
        samples = pickle.load(f)
    assert sorted(s['img_id'] for s in samples) == sorted(sizes)
    for sample in samples:
        pred = sample['pred_instances']
        # at most max_per_img; unseeded, so no exact count (100 when run)
        assert 0 < len(pred['masks']) == len(pred['bboxes']) <= 100
        assert all(rle['size'] == sizes[sample['img_id']]
                   for rle in pred['masks'])


def test_semantic_fpn_learns_street_masks(tmp_path, labelme):
    """Semantic FPN trains from scratch on labelme masks and beats the
    all-background prediction on two held-out street frames."""
    work_dir, losses, _ = train(tmp_path, SEG_CONFIG)
    assert mean(losses[-5:]) < 0.6 * mean(losses[:5])
    miou = metrics(work_dir, 'mIoU')
    baseline = background_only_miou(
        osp.join(labelme, 'labelme_seg', 'ann_dir', 'val'), 8)
    assert 25 < baseline < 35  # 3 classes in the frames, ~88% background
    assert miou > baseline + 10, f'mIoU {miou} vs baseline {baseline:.1f}'
