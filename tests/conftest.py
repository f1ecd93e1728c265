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
