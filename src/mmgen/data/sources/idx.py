"""mmgen's own IDX reader (LeCun et al.'s format: a big-endian header, then the raw array).

torchvision's MNIST classes read IDX files only when they are extracted, in torchvision's layout
(``ROOT/MNIST/raw/train-images-idx3-ubyte``). This reader remains for what torchvision cannot
read: gzip-only folders (such as the project's ``../shared/datasets``), Debian's flat folders
(``/usr/share/datasets/fashion-mnist/*.gz``) and ``idx:PATH``, so that such folders are read as
they are, with no extraction and no writes.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from mmgen.errors import UsageError

# IDX type code (third byte of the magic number) -> big-endian NumPy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed, into a NumPy array in native byte order.

    Args:
        path: the file; compression is detected from its content, not its name.

    Raises:
        ValueError: the file is not valid IDX data (bad magic number, unknown type code,
            truncated, trailing bytes, corrupt gzip); the message names the file.
    """
    array, _ = read_idx_with_sha(Path(path))
    return array.copy()


def read_idx_with_sha(path: Path) -> tuple[np.ndarray, str]:
    """Return a read-only view of the IDX data and the SHA-256 of the decompressed bytes."""
    data = path.read_bytes()
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise UsageError(
                f"{path} is not a valid gzip file ({error}); the download or copy is "
                "incomplete: replace the file"
            ) from None
    return _parse_idx(data, path), hashlib.sha256(data).hexdigest()


def _parse_idx(data: bytes, path: Path) -> np.ndarray:
    """Parse IDX bytes: magic 0x0000TTDD (T type code, D number of dims), dims, then data."""
    if len(data) < 4 or data[:2] != b"\0\0":
        raise UsageError(
            f"{path} is not an IDX file (magic number {data[:4].hex() or 'missing'}, "
            "expected 0000TTDD); check that it is one of the four MNIST-like files"
        )
    type_code, num_dims = data[2], data[3]
    if type_code not in IDX_DTYPES:
        valid = ", ".join(f"0x{code:02x}" for code in IDX_DTYPES)
        raise UsageError(f"{path} has unknown IDX type code 0x{type_code:02x}; valid: {valid}")
    if num_dims == 0:
        raise UsageError(f"{path} declares 0 dimensions; an IDX array needs at least one")
    header_size = 4 + 4 * num_dims
    if len(data) < header_size:
        raise UsageError(f"{path} is truncated inside its header; replace the file")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=num_dims, offset=4))
    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_size
    if actual != expected:
        problem = "is truncated" if actual < expected else "has trailing bytes"
        shape = "×".join(str(d) for d in dims)
        raise UsageError(
            f"{path} {problem}: its header declares {shape} values ({expected} bytes) but "
            f"{actual} bytes follow; replace the file"
        )
    array = np.frombuffer(data, dtype, offset=header_size).reshape(dims)
    return array if dtype.itemsize == 1 else array.astype(dtype.newbyteorder("="))
