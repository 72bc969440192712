import numpy as np
import pytest
import torch

from fastgrok.philox import philox4x32, philox_u32


def test_random123_known_answer():
    z = torch.zeros(1, dtype=torch.int64)
    words = [int(w) for w in philox4x32(0, z, z, z, z)]
    assert words == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    ones = torch.full((1,), 0xFFFFFFFF, dtype=torch.int64)
    key = 0xFFFFFFFF | (0xFFFFFFFF << 32)
    assert [int(w) for w in philox4x32(key, ones, ones, ones, ones)] == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]


def _philox_numpy(seed: int, offset: int) -> int:
    """An independent scalar Philox4x32-10 with Python integers."""
    c = [offset & 0xFFFFFFFF, offset >> 32, 0, 0]
    k = [seed & 0xFFFFFFFF, seed >> 32]
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k[0]) & 0xFFFFFFFF, p1 & 0xFFFFFFFF,
             ((p0 >> 32) ^ c[3] ^ k[1]) & 0xFFFFFFFF, p0 & 0xFFFFFFFF]
        k = [(k[0] + 0x9E3779B9) & 0xFFFFFFFF, (k[1] + 0xBB67AE85) & 0xFFFFFFFF]
    return c[0]


def test_matches_scalar_reference_including_64bit_offsets():
    rng = np.random.default_rng()
    seed = int(rng.integers(0, 2**62))
    offs = [0, 1, 2**31 - 1, 2**32 - 1, 2**32, 2**40 + 12345, int(rng.integers(0, 2**50))]
    got = philox_u32(seed, torch.tensor(offs, dtype=torch.int64)).tolist()
    assert got == [_philox_numpy(seed, o) for o in offs]


def test_uniform_bits():
    u = philox_u32(5, torch.arange(200_000, dtype=torch.int64))
    assert u.min() >= 0 and u.max() < 2**32
    bits = torch.stack([(u >> b) & 1 for b in range(32)]).double().mean(1)
    assert torch.all((bits - 0.5).abs() < 0.01)


def test_rejects_non_int64():
    with pytest.raises(TypeError):
        philox_u32(0, torch.arange(4, dtype=torch.int32))


def test_equals_triton_randint_in_interpreter():
    triton = pytest.importorskip("triton")
    import triton.language as tl

    @triton.jit
    def _randint_kernel(OUT, seed, N, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        big = offs.to(tl.int64) * 4294967311  # spans the high counter word
        r = tl.randint(seed, big)
        tl.store(OUT + offs, r.to(tl.int64) & 0xFFFFFFFF, mask=offs < N)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    n, seed = 300, 123456789012
    out = torch.full((n,), -1, dtype=torch.int64, device=device)
    _randint_kernel[(triton.cdiv(n, 128),)](out, seed, n, BLOCK=128)
    ref = philox_u32(seed, torch.arange(n, dtype=torch.int64, device=device) * 4294967311)
    assert torch.equal(out.cpu(), ref.cpu())
