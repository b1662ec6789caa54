"""Prepare the deepforest tree-crown images as a small COCO detection set.

The deepforest 2.1.0 wheel ships four aerial RGB images with Pascal VOC boxes
(951 tree crowns). The two large YELL crops are cut into tiles; every box is
clipped to its tile and kept when most of it lies inside. The tiles of the
smaller YELL crop form the validation split (a separate scene), everything
else the training split. One class, ``tree`` (SOAP's Alive / Dead included).

    python tools/data/prepare_deepforest.py [--out data/deepforest]

Writes ``images/*.png`` and ``annotations/{train,val}.json``; a second run with
the files in place does nothing.
"""
import argparse
import json
import os
import os.path as osp
import shutil
import tempfile
import xml.etree.ElementTree as ET

from PIL import Image
from pypi_data import REPO, extract, fetch

SOURCES = {  # image stem -> split
    'OSBS_029': 'train',
    'SOAP_061': 'train',
    '2019_YELL_2_528000_4978000_image_crop2': 'train',
    '2019_YELL_2_541000_4977000_image_crop': 'val',
}
CLASSES = ('tree', )


def read_voc(path):
    """Boxes (x1, y1, x2, y2) of a VOC XML file."""
    root = ET.parse(path).getroot()
    return [[
        float(obj.find(f'bndbox/{k}').text)
        for k in ('xmin', 'ymin', 'xmax', 'ymax')
    ] for obj in root.iter('object')]


def tile_origins(size, tile):
    """Tile starts covering ``size``; the last tile is aligned to the end."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, tile))
    return starts + [size - tile]


def clip_boxes(boxes, x0, y0, tile, min_visible):
    """Boxes shifted into a tile, clipped, kept if ``min_visible`` of the
    area is inside."""
    kept = []
    for x1, y1, x2, y2 in boxes:
        cx1, cy1 = max(x1, x0) - x0, max(y1, y0) - y0
        cx2, cy2 = min(x2, x0 + tile) - x0, min(y2, y0 + tile) - y0
        if cx2 - cx1 < 2 or cy2 - cy1 < 2:
            continue
        if (cx2 - cx1) * (cy2 - cy1) >= min_visible * (x2 - x1) * (y2 - y1):
            kept.append([cx1, cy1, cx2, cy2])
    return kept


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default=osp.join(REPO, 'data', 'deepforest'))
    parser.add_argument('--tile', type=int, default=256)
    parser.add_argument('--min-visible', type=float, default=0.5)
    args = parser.parse_args()
    ann_dir = osp.join(args.out, 'annotations')
    if all(
            osp.exists(osp.join(ann_dir, f'{s}.json'))
            for s in ('train', 'val')):
        print(f'[deepforest] ready in {args.out}')
        return

    wheel = fetch('deepforest', '2.1.0')
    src = tempfile.mkdtemp()
    try:
        extract(wheel, 'deepforest/data', src)
        img_dir = osp.join(args.out, 'images')
        os.makedirs(img_dir, exist_ok=True)
        coco = {
            split:
            dict(
                images=[],
                annotations=[],
                categories=[
                    dict(id=i + 1, name=n) for i, n in enumerate(CLASSES)
                ])
            for split in ('train', 'val')
        }
        for stem, split in SOURCES.items():
            image = Image.open(osp.join(src, f'{stem}.png')).convert('RGB')
            boxes = read_voc(osp.join(src, f'{stem}.xml'))
            width, height = image.size
            for y0 in tile_origins(height, args.tile):
                for x0 in tile_origins(width, args.tile):
                    tw, th = min(args.tile, width), min(args.tile, height)
                    name = f'{stem}_{x0}_{y0}.png'
                    image.crop((x0, y0, x0 + tw,
                                y0 + th)).save(osp.join(img_dir, name))
                    images, anns = coco[split]['images'], coco[split][
                        'annotations']
                    image_id = len(images) + 1
                    images.append(
                        dict(id=image_id, file_name=name, width=tw, height=th))
                    for x1, y1, x2, y2 in clip_boxes(boxes, x0, y0, args.tile,
                                                     args.min_visible):
                        w, h = x2 - x1, y2 - y1
                        anns.append(
                            dict(
                                id=len(anns) + 1,
                                image_id=image_id,
                                category_id=1,
                                bbox=[x1, y1, w, h],
                                area=w * h,
                                iscrowd=0))
        os.makedirs(ann_dir, exist_ok=True)
        for split, data in coco.items():
            tmp = osp.join(ann_dir, f'{split}.json.tmp')
            with open(tmp, 'w') as f:
                json.dump(data, f)
            os.replace(tmp, osp.join(ann_dir, f'{split}.json'))
            print(f'[deepforest] {split}: {len(data["images"])} images, '
                  f'{len(data["annotations"])} boxes')
    finally:
        shutil.rmtree(src)
    print(f'[deepforest] ready in {args.out}')


if __name__ == '__main__':
    main()
