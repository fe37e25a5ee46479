"""mmgen: entangled multi-modal datasets (MNIST-E) and the evidence that they are coherent.

Implements Korthals et al., *Deep generative models for learning coherent latent
representations from multi-modal data* (M²VAE, MNIST-E) and the JMVAE family of Suzuki et al.
"""

from __future__ import annotations

import functools


@functools.cache
def _version() -> str:
    # importlib.metadata costs a tenth of a second: read it on first use, not while the command
    # line starts (a Ctrl-C in that window would be a traceback, not the CLI's one line).
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mmgen-entangled")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0.0.0+unknown"


def __getattr__(name: str) -> str:
    # ``mmgen.__version__`` and ``from mmgen import __version__``, computed lazily (PEP 562).
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["__version__"]
