"""mmgen: entangled multi-modal datasets (MNIST-E) and the evidence that they are coherent.

Implements Korthals et al., *Deep generative models for learning coherent latent
representations from multi-modal data* (M²VAE, MNIST-E) and the JMVAE family of Suzuki et al.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mmgen-entangled")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
