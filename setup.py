import os.path as osp
import platform
from setuptools import find_packages, setup


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


def extensions():
    """The fused CPU kernels ``localvit_mm._ext`` and their build command.

    Built when torch is importable at install time (``pip install
    --no-build-isolation``, as tools/setup_env.sh does); without them the
    locality FFN runs the same function with ATen ops.
    """
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
    **extensions())
