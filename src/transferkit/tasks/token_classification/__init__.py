"""Token classification (named entities): word/tag files (formats.py), sub-word alignment and entity spans
(align.py). The task itself is wired up once the text layer (transferkit.text) is in place."""
