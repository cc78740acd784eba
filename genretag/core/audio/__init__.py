"""The audio path shared by serving and training: ``uri`` (vet a reference) → ``decode``
(FFmpeg → mono float32 at the model's rate) → ``windows`` (fixed-length model inputs)."""
