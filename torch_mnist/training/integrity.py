"""A checkpoint's content digest: SHA-256 over everything it holds, so damage anywhere is noticed.

Torch's zip reader does not verify its entries' checksums: a flipped byte inside
a weight loads as a different weight. The digest is computed at save over a
canonical walk of the contents (keys sorted; each tensor's dtype, shape and
bytes), and recomputed at load.
"""

import hashlib
import struct

import torch

DIGEST_KEY = "digest"
ALGORITHM = "sha256"


def content_digest(checkpoint: dict) -> str:
    """``"sha256:<hex>"`` of ``checkpoint``'s contents, its own digest entry left out."""
    digest = hashlib.sha256()
    _feed(digest, {key: value for key, value in checkpoint.items() if key != DIGEST_KEY})
    return f"{ALGORITHM}:{digest.hexdigest()}"


def _feed(digest, value) -> None:
    """Feed ``value`` into ``digest`` with its type and length, so no two contents read the same."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"tensor:{flat.dtype}:{tuple(value.shape)}:".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(f"dict:{len(value)}:".encode())
        for key in sorted(value, key=repr):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__}:{len(value)}:".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, float):
        digest.update(b"float:" + struct.pack(">d", value))  # exact bits: repr could hide a flipped last bit
    else:  # str, int, bool, None: their repr is exact
        text = repr(value).encode()
        digest.update(f"{type(value).__name__}:{len(text)}:".encode() + text)
