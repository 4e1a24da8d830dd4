"""Audio in: the framewise piano transcriber and the MT3-style sequence model, their training
data, training and inference. Both write notes through the MT3 codec (``cadenza.tokenizers.mt3``)."""

SAMPLE_RATE = 16000  # the rate every transcriber hears; audio is resampled to it (the one definition)
