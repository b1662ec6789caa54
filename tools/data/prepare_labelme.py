"""Prepare labelme 6.3.1's example photos as tiny instance and semantic sets.

The labelme sdist (GPL-3: used as test data only, never vendored) ships three
VOC2011 photos with COCO polygon annotations and VOC ``SegmentationClass``
masks, and five street video frames with background / car / track masks.

* ``data/labelme_coco``: ``images/*.jpg`` and ``annotations/instances.json``
  (the 12 polygon instances, the unused ``_background_`` category dropped and
  categories renumbered from 1).
* ``data/labelme_seg``: ``img_dir/{train,val}`` and ``ann_dir/{train,val}``
  with single-channel label PNGs in one merged label space
  (:data:`SEG_CLASSES`, 255 = ignore). The three photos and the first three
  frames train, the last two frames validate.

    python tools/data/prepare_labelme.py [--out data]

A second run with the files in place does nothing.
"""
import argparse
import json
import os
import os.path as osp
import shutil
import tempfile

import numpy as np
from PIL import Image
from pypi_data import REPO, extract, fetch

EXAMPLES = 'labelme-6.3.1/examples/'
VOC_NAMES = ('_background_', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle',
             'bus', 'car', 'cat', 'chair', 'cow', 'diningtable', 'dog',
             'horse', 'motorbike', 'person', 'potted plant', 'sheep', 'sofa',
             'train', 'tv/monitor')
STREET_NAMES = ('_background_', 'car', 'track')
SEG_CLASSES = ('background', 'person', 'bottle', 'chair', 'sofa', 'bus', 'car',
               'track')
VAL_FRAMES = ('00000103', '00000104')


def label_map(names):
    """uint8 lookup table from a source label space to :data:`SEG_CLASSES`."""
    lut = np.full(256, 255, np.uint8)
    for i, name in enumerate(names):
        name = 'background' if name == '_background_' else name
        if name in SEG_CLASSES:
            lut[i] = SEG_CLASSES.index(name)
    return lut


def prepare_coco(sdist, out):
    """COCO instance set from the polygon annotations."""
    ann_file = osp.join(out, 'annotations', 'instances.json')
    if osp.exists(ann_file):
        return
    src = tempfile.mkdtemp()
    try:
        folder = EXAMPLES + 'instance_segmentation/data_dataset_coco'
        extract(sdist, folder, src)
        extract(sdist, folder + '/JPEGImages', osp.join(out, 'images'))
        with open(osp.join(src, 'annotations.json')) as f:
            coco = json.load(f)
    finally:
        shutil.rmtree(src)
    used = sorted({a['category_id'] for a in coco['annotations']})
    new_id = {old: i + 1 for i, old in enumerate(used)}
    names = {c['id']: c['name'] for c in coco['categories']}
    coco['categories'] = [dict(id=new_id[c], name=names[c]) for c in used]
    for ann in coco['annotations']:
        ann['category_id'] = new_id[ann['category_id']]
        ann['id'] += 1  # COCO ids start at 1
    for image in coco['images']:
        image['file_name'] = osp.basename(image['file_name'])
    os.makedirs(osp.dirname(ann_file), exist_ok=True)
    with open(ann_file + '.tmp', 'w') as f:
        json.dump(coco, f)
    os.replace(ann_file + '.tmp', ann_file)
    print(f'[labelme] COCO: {len(coco["images"])} images, '
          f'{len(coco["annotations"])} instances, classes '
          f'{[c["name"] for c in coco["categories"]]}')


def prepare_seg(sdist, out):
    """Semantic set from the VOC photos and the street frames."""
    if osp.exists(osp.join(out, 'ann_dir', 'val')):
        return
    src = tempfile.mkdtemp()
    sources = [('semantic_segmentation/data_dataset_voc', 'SegmentationClass',
                VOC_NAMES),
               ('video_annotation/data_dataset_voc', 'SegmentationClassPNG',
                STREET_NAMES)]
    try:
        for folder, mask_folder, names in sources:
            images = extract(sdist, EXAMPLES + folder + '/JPEGImages',
                             osp.join(src, 'img'))
            extract(sdist, f'{EXAMPLES}{folder}/{mask_folder}',
                    osp.join(src, 'ann'))
            lut = label_map(names)
            for name in images:
                stem = osp.splitext(name)[0]
                split = 'val' if stem in VAL_FRAMES else 'train'
                mask = np.asarray(
                    Image.open(osp.join(src, 'ann', stem + '.png')))
                for sub in ('img_dir', 'ann_dir'):
                    os.makedirs(
                        osp.join(out, sub, split + '.tmp'), exist_ok=True)
                shutil.copy(
                    osp.join(src, 'img', name),
                    osp.join(out, 'img_dir', split + '.tmp', name))
                Image.fromarray(lut[mask]).save(
                    osp.join(out, 'ann_dir', split + '.tmp', stem + '.png'))
        for sub in ('img_dir', 'ann_dir'):
            for split in ('train', 'val'):
                dst = osp.join(out, sub, split)
                shutil.rmtree(dst, ignore_errors=True)
                os.replace(dst + '.tmp', dst)
    finally:
        shutil.rmtree(src)
    print(f'[labelme] segmentation: classes {list(SEG_CLASSES)}, '
          f'val frames {list(VAL_FRAMES)}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default=osp.join(REPO, 'data'))
    args = parser.parse_args()
    coco_dir = osp.join(args.out, 'labelme_coco')
    seg_dir = osp.join(args.out, 'labelme_seg')
    if not (osp.exists(osp.join(coco_dir, 'annotations', 'instances.json'))
            and osp.exists(osp.join(seg_dir, 'ann_dir', 'val'))):
        sdist = fetch('labelme', '6.3.1', sdist=True)
        prepare_coco(sdist, coco_dir)
        prepare_seg(sdist, seg_dir)
    print(f'[labelme] ready in {coco_dir} and {seg_dir}')


if __name__ == '__main__':
    main()
