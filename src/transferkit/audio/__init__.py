"""Audio modality layer: audio files, manifests, features, augmentation, VAD, speech models (Whisper, CTC)."""
