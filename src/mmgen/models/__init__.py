"""Models: the uni-modal β-CVAE (``cvae``) and the multi-modal VAEs evaluated on datasets."""
