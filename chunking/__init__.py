"""The chunking stage: fetch the source's items and write them as numbered chunk blobs."""
