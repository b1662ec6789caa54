import contextlib
import io
import os
import os.path as osp
import runpy
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def run_tool(*args, env=None, timeout=900):
    """Run a command from the repository root with this interpreter's
    environment first on PATH; return the CompletedProcess."""
    full_env = dict(os.environ)
    full_env['PATH'] = osp.dirname(sys.executable) + os.pathsep + \
        full_env.get('PATH', '')
    full_env['PYTHON'] = sys.executable
    full_env['PYTHONPATH'] = os.pathsep.join([
        REPO,
        osp.join(REPO, 'tests', 'helpers'),
        full_env.get('PYTHONPATH', '')
    ])
    full_env.update(env or {})
    cmd = [sys.executable, *args[1:]] if args[0] == 'python' else list(args)
    return subprocess.run(
        cmd,
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout)


def run_cli(script, *args):
    """A tool's ``__main__`` in this process: its exit status and what it
    wrote to stderr."""
    argv, stderr = sys.argv, io.StringIO()
    sys.argv = [script, *map(str, args)]
    try:
        with pytest.raises(SystemExit) as exit_info, \
                contextlib.redirect_stderr(stderr):
            runpy.run_path(osp.join(REPO, script), run_name='__main__')
    finally:
        sys.argv = argv
    return exit_info.value.code, stderr.getvalue()


@pytest.fixture(scope='session')
def fashion_mnist():
    """The real Fashion-MNIST files, prepared by the project's own script."""
    result = run_tool('bash', 'tools/data/prepare_fashion_mnist.sh')
    assert result.returncode == 0, result.stderr
    return osp.join(REPO, 'data', 'fashion_mnist')


@pytest.fixture
def restore_default_scope():
    """Undo what a test does to mmengine's global default scope.

    ``load_config`` registers the config's codebase and makes its scope the
    default, as a tool (one config per process) wants; a test that loads
    configs of several codebases in-process would otherwise leave, say,
    mmseg as the default scope for the tests that follow.
    """
    from mmengine.registry import DefaultScope
    saved = DefaultScope._instance_dict.copy()
    yield
    DefaultScope._instance_dict = saved
