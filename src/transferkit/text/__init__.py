"""Text modality layer: tokenizer, pretrained encoders, tokenized data, and what every text task shares."""
