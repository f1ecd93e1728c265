import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Many small tensor ops: one intra-op thread avoids stalls on a busy 2-core machine (and
    keeps timings-free tests reproducible). Modules opt in with ``pytestmark``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def tiny_pretraining_defaults(tmp_path_factory):
    """``backbone.weights: synthetic`` in the tests (the ``synthetic`` recipe's default): the
    tiny pretraining set and a two-epoch recipe (tests/tiny.py), cached in a session folder, so
    a test that needs a pretrained backbone trains one in seconds, once per input size."""
    import nas_reid.train.pretrain as pretrain
    from tests.tiny import PRETRAIN_RECIPE, PRETRAIN_SET

    cache = tmp_path_factory.mktemp("pretrained")
    patch = pytest.MonkeyPatch()
    patch.setattr(pretrain, "PRETRAIN_CONFIG", PRETRAIN_SET)
    patch.setattr(pretrain, "RECIPE", PRETRAIN_RECIPE)
    patch.setattr(pretrain, "cache_root", lambda: cache)
    yield
    patch.undo()


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """A tiny synthreid benchmark (16 identities, 8 train / 8 test, 3 cameras, 8 images each,
    64x32), generated once per session; tests read it and never write into it."""
    from nas_reid.data.synthreid import SynthConfig, generate_synthreid

    root = tmp_path_factory.mktemp("synth") / "synthreid"
    generate_synthreid(root, SynthConfig(ids=16, cameras=3, images_per_id=8, height=64, width=32),
                       workers=1, progress=False)
    return root


@pytest.fixture(scope="session")
def dataset(data_root):
    from nas_reid.data import load_dataset

    return load_dataset("synthreid", data_root)


@pytest.fixture
def run():
    """``run(*args)``: the ``nas-reid`` CLI in-process (click's runner), exceptions not caught."""
    from click.testing import CliRunner

    from nas_reid.cli import main

    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke
