"""The modality-neutral data layer: TaskData (the DataModule base), the skipped-item protocol, demo datasets."""
