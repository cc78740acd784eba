"""Pretrained taggers (musicnn, MTG/UPF) converted to genretag artifacts."""
