"""Dataset readers, writers and builders. Images are always read through `data.images.load_image`."""
