"""The quickstart's comparison report on two short real runs."""
import json
import os.path as osp

from conftest import REPO, run_tool
from PIL import Image

QUICKSTART = osp.join(REPO, 'configs/quickstart')


def short_quickstart_run(tmp_path, model):
    config = tmp_path / f'{model}.py'
    base = osp.join(QUICKSTART, model + '_2xb32_fashion-mnist.py')
    config.write_text(f'_base_ = [{base!r}]\n'
                      "train_dataloader = dict(batch_size=8, num_workers=0,\n"
                      "                        persistent_workers=False)\n"
                      "val_dataloader = dict(batch_size=64, num_workers=0,\n"
                      "                      persistent_workers=False,\n"
                      "                      dataset=dict(indices=64))\n"
                      "test_dataloader = val_dataloader\n"
                      "train_cfg = dict(max_iters=4, val_interval=2)\n"
                      "default_hooks = dict(checkpoint=dict(interval=4))\n")
    work_dir = tmp_path / model
    result = run_tool('python', 'tools/train.py', str(config), '--work-dir',
                      str(work_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    return str(work_dir)


def test_report_table_json_and_curves(tmp_path, fashion_mnist):
    runs = [
        short_quickstart_run(tmp_path, m)
        for m in ('localvit-tiny', 'deit-tiny')
    ]
    out, table = tmp_path / 'curves.png', tmp_path / 'report.json'
    result = run_tool('python', 'tools/analysis_tools/quickstart_report.py',
                      *runs, '--out', str(out), '--json', str(table),
                      '--max-test-images', '128', '--speed-batch', '16')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'localvit-tiny' in result.stdout and 'deit-tiny' in result.stdout
    rows = json.loads(table.read_text())
    assert [r['arch'] for r in rows] == ['tiny', 'deit-tiny']
    for row in rows:
        assert row['test_images'] == 128
        assert 0 <= row['top1'] <= 100
        correct = row['top1'] * 128 / 100  # a whole number of images
        assert abs(correct - round(correct)) < 1e-9
        assert row['img_per_s'] > 0
        assert [step for step, _ in row['curve']] == [2, 4]
    # Per block: locality FFN 312,196 parameters (fc1, fc2 without bias,
    # three BNs, dw conv, SE) against the GELU MLP with norm2, 296,256;
    # the head count (4 vs 3) changes no parameter.
    assert rows[0]['params'] - rows[1]['params'] == 12 * (312196 - 296256)
    assert rows[0]['macs'] > rows[1]['macs']
    with Image.open(out) as image:  # figsize (6, 4) at 120 dpi
        assert (image.format, image.size) == ('PNG', (720, 480))
