"""Audio modality layer: audio files, NeMo manifests, transcript normalisation, log-mel features,
augmentation, voice activity detection and subtitles. Imports only the core."""
