import os
import os.path as osp
import platform
import shutil
from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

# What ``mim train / test / search localvit_mm`` read from an installed
# package, in OpenMMLab's layout: localvit_mm/.mim/{configs,tools,...}.
MIM_FILES = ('configs', 'tools', 'model-index.yml')


def readme():
    with open('README.md', encoding='utf-8') as f:
        return f.read()


def get_version():
    scope = {}
    with open(osp.join('localvit_mm', 'version.py'), encoding='utf-8') as f:
        exec(compile(f.read(), 'version.py', 'exec'), scope)
    return scope['__version__']


def parse_requirements(fname):
    """Read a requirements file, skipping comments and blank lines."""
    with open(osp.join('requirements', fname), encoding='utf-8') as f:
        return [
            line.strip() for line in f
            if line.strip() and not line.startswith('#')
        ]


class BuildPyWithMim(build_py):
    """``build_py`` that also copies the configs, tools and model index into
    ``localvit_mm/.mim`` of the built package (wheels, and so ``pip
    install .``), where mim looks for them. The source tree is left as it is;
    an editable install reads them from the repository instead."""

    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False):
            return
        target = osp.join(self.build_lib, 'localvit_mm', '.mim')
        os.makedirs(target, exist_ok=True)
        for name in MIM_FILES:
            dst = osp.join(target, name)
            if osp.isdir(name):
                shutil.rmtree(dst, ignore_errors=True)
                shutil.copytree(
                    name,
                    dst,
                    ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
            else:
                shutil.copyfile(name, dst)


def extensions():
    """The fused CPU kernels ``localvit_mm._ext`` and their build command.

    Built when torch is importable at install time (``pip install
    --no-build-isolation``, as tools/setup_env.sh does) and
    ``LOCALVIT_BUILD_EXT`` is not ``0``; without them the locality FFN runs
    the same function with ATen ops.
    """
    if os.environ.get('LOCALVIT_BUILD_EXT') == '0':
        return dict()
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        return dict()
    args = ['-O3', '-fopenmp']
    if platform.machine() in ('x86_64', 'AMD64'):
        # ATen's AVX2 vectors; used only where torch reports AVX2 or better.
        args += [
            '-mavx2', '-mfma', '-DCPU_CAPABILITY=AVX2', '-DCPU_CAPABILITY_AVX2'
        ]
    ext = CppExtension(
        'localvit_mm._ext', ['localvit_mm/ops/csrc/bn_act.cpp'],
        extra_compile_args=args,
        extra_link_args=['-fopenmp'])
    return dict(ext_modules=[ext], cmdclass=dict(build_ext=BuildExtension))


def build_settings():
    """Extension modules and commands: the kernels and the mim files."""
    settings = extensions()
    settings.setdefault('cmdclass', {})['build_py'] = BuildPyWithMim
    return settings


setup(
    name='localvit_mm',
    version=get_version(),
    description='LocalViT (locality in vision transformers) for OpenMMLab: '
    'mmpretrain, mmdet and mmsegmentation',
    long_description=readme(),
    long_description_content_type='text/markdown',
    license='Apache License 2.0',
    packages=find_packages(exclude=('configs', 'tools', 'tests')),
    python_requires='>=3.8',
    install_requires=parse_requirements('runtime.txt'),
    extras_require={
        'mim': parse_requirements('mminstall.txt'),
        'tests': parse_requirements('tests.txt'),
        'optional': parse_requirements('optional.txt'),
    },
    zip_safe=False,
    **build_settings())
