"""Data: the uni-modal sources (``sources``) and the multi-modal dataset file (``h5io`` writes
and reads it, ``header`` is its typed root record, ``names`` the modality-name rule)."""
