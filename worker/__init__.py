"""The tagging worker: consume track references, decode, infer, write tags, commit.

Stages, one module each: ``uri`` (where is the audio, is it allowed) → ``decode`` (FFmpeg →
waveform) → ``batch`` (windows) → ``infer`` (TorchScript artifact) → ``core.tagstore``
(Redis) → ``loop`` (poll → process → write → commit), with ``metrics``/``health`` beside it.
Nothing here imports ``training``: the model artifact is the only coupling.
"""
