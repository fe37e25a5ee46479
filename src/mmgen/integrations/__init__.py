"""Bridges from mmgen files to other multimodal-VAE libraries (optional extras).

``mmgen.integrations.multivae`` needs ``pip install 'mmgen-entangled[multivae]'``.
"""
